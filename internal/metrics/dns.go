package metrics

import "github.com/cgwall/cgwall/internal/resolver"

// dnsVerdicts are the words of cgwall_dns_queries_total's verdict label:
// those of the DNS events' "verdict" field (internal/events/dns.go), and
// audit_nxdomain, named as the packet counters' audit_drop is.
var dnsVerdicts = []string{"resolved", "nxdomain", "audit_nxdomain", "servfail"}

// DNSVerdict words a resolver event's verdict for DNSQuery; ok is false for
// an event that is no query (a failure to forget addresses).
func DNSVerdict(e resolver.Event) (verdict string, ok bool) {
	switch {
	case e.Name == "" && e.QType == 0 && e.Err != nil: // a query of the root has a type
		return "", false
	case e.Err != nil:
		return "servfail", true
	case e.Action == 1:
		return "resolved", true
	case e.Audit:
		return "audit_nxdomain", true // the client got the answer regardless
	}
	return "nxdomain", true
}
