package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestExplainPacketGuard checks that a refusal with EPERM is worded without
// the library's memlock hint, which does not apply, and says what BPF LSM
// needs; other errors are kept as they are.
func TestExplainPacketGuard(t *testing.T) {
	eperm := fmt.Errorf("load program: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM)
	got := explainPacketGuard(eperm).Error()
	if strings.Contains(got, "MEMLOCK") || !strings.Contains(got, "CONFIG_BPF_LSM") || !strings.Contains(got, "lockdown") {
		t.Errorf("explainPacketGuard(EPERM) = %q", got)
	}
	other := errors.New("program too large")
	if got := explainPacketGuard(other); got != other {
		t.Errorf("explainPacketGuard(%v) = %v, want it unchanged", other, got)
	}
	if explainPacketGuard(nil) != nil {
		t.Error("explainPacketGuard(nil) is not nil")
	}
}
