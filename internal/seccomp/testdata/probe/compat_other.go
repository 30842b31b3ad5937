//go:build !amd64

package main

// compat has nothing to try: only amd64's conventions are probed here.
func compat() {}
