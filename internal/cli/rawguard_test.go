package cli

import (
	"errors"
	"testing"
)

func TestSocketsRefused(t *testing.T) {
	gap := errors.New("why")
	for _, tc := range []struct {
		audit bool
		gap   error
		want  string
	}{
		{false, nil, "raw and packet sockets refused"},
		{false, gap, "raw sockets refused; packet sockets NOT refused: why"},
		{true, nil, "raw and packet sockets logged, not refused (audit mode)"},
		{true, gap, "raw sockets logged, not refused (audit mode); packet sockets NOT seen: why"},
	} {
		if got := socketsRefused(tc.audit, tc.gap); got != tc.want {
			t.Errorf("socketsRefused(%v, %v) = %q, want %q", tc.audit, tc.gap, got, tc.want)
		}
	}
}
