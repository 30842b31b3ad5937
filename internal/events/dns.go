package events

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a decision about a DNS query that cgwall's resolver answered for a
// process in the cgroup: resolved, or answered NXDOMAIN. It is the events
// package's own, filled by the command line from the resolver's event, so
// that printing needs neither the resolver nor the policy.
type DNS struct {
	Time  time.Time
	Name  string // the question's name, lower case, without the trailing dot
	QType uint16
	// Action is 1 when the client got the server's answer, 0 when it got
	// NXDOMAIN (or SERVFAIL, with Err); in audit mode, what would have
	// happened (the client got the answer regardless).
	Action uint8
	Audit  bool
	// Rule is the deciding name rule in its canonical form, or "default";
	// RuleID its ID, 0 for the default.
	Rule   string
	RuleID uint32
	// Server is the server the query was forwarded to, if it was.
	Server netip.AddrPort
	// Err says why the client got SERVFAIL (the server did not answer, say).
	Err    string
	Cgroup string
}

// WriteDNS prints one DNS decision on one line: in text, it begins with
// "DNS <name>, ACTION <n> hook=dns", as packet decisions begin with "DST".
func WriteDNS(w io.Writer, f Format, e DNS) error {
	return writeLine(w, f, func() any { return e.record() }, e.text)
}

// text has the packet events' order: the words, hook= and what was asked
// first, rule= next, then audit=, time= and cgroup= last.
func (e DNS) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DNS %s, ACTION %d hook=dns qtype=%s", value(nameString(e.Name)), e.Action, qtypeName(e.QType))
	if e.Rule != "" {
		fmt.Fprintf(&b, " rule=%s", value(e.Rule))
	}
	if e.Server.IsValid() {
		fmt.Fprintf(&b, " server=%s", e.Server)
	}
	if e.Err != "" {
		fmt.Fprintf(&b, " error=%s", value(e.Err))
	}
	writeTail(&b, e.Audit, e.Time, e.Cgroup)
	return b.String()
}

type dnsRecord struct {
	Name    string `json:"name"`
	Action  uint8  `json:"action"`
	Verdict string `json:"verdict"`
	Hook    string `json:"hook"`
	QType   string `json:"qtype"`
	Rule    string `json:"rule,omitempty"`
	RuleID  uint32 `json:"rule_id"`
	Server  string `json:"server,omitempty"`
	Error   string `json:"error,omitempty"`
	Audit   bool   `json:"audit"`
	Cgroup  string `json:"cgroup,omitempty"`
	Time    string `json:"time,omitempty"`
}

func (e DNS) record() dnsRecord {
	r := dnsRecord{
		Name: nameString(e.Name), Action: e.Action, Verdict: "nxdomain", Hook: "dns", QType: qtypeName(e.QType),
		Rule: e.Rule, RuleID: e.RuleID, Error: e.Err, Audit: e.Audit, Cgroup: e.Cgroup,
	}
	switch {
	case e.Err != "":
		r.Verdict = "servfail"
	case e.Action == 1:
		r.Verdict = "resolved"
	}
	if e.Server.IsValid() {
		r.Server = e.Server.String()
	}
	if !e.Time.IsZero() {
		r.Time = timeString(e.Time)
	}
	return r
}

// nameString is the root's name, ".", where the question's name is empty.
func nameString(name string) string {
	if name == "" {
		return "."
	}
	return name
}

// qtypeName names a query type as dig does (A, AAAA, ANY), or in the
// generic form of RFC 3597, TYPE65280.
func qtypeName(t uint16) string {
	switch typ := dnsmessage.Type(t); typ {
	case dnsmessage.TypeALL:
		return "ANY"
	default:
		if s := typ.String(); strings.HasPrefix(s, "Type") {
			return strings.TrimPrefix(s, "Type")
		}
	}
	return "TYPE" + strconv.Itoa(int(t))
}
