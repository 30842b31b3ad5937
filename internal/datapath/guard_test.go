package datapath

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGuardRefused checks that a refusal with EPERM is worded without
// the library's memlock hint, which does not apply, and says what BPF LSM
// needs; other errors are kept as they are.
func TestGuardRefused(t *testing.T) {
	eperm := fmt.Errorf("load program: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM)
	got := guardRefused(eperm).Error()
	if strings.Contains(got, "MEMLOCK") || !strings.Contains(got, "CONFIG_BPF_LSM") || !strings.Contains(got, "lockdown") {
		t.Errorf("guardRefused(EPERM) = %q", got)
	}
	other := errors.New("program too large")
	if got := guardRefused(other); !errors.Is(got, other) {
		t.Errorf("guardRefused(%v) = %v, want it kept", other, got)
	}
	if (&Datapath{}).PacketGuardError() != nil {
		t.Error("PacketGuardError of a datapath whose guard loaded is not nil")
	}
}
