// Package datapath loads cgwall's BPF programs and maps, fills the rule maps
// from a policy, attaches the programs to a cgroup and reads back events and
// counters.
package datapath

// The include paths cover the multiarch folders where Debian keeps asm/types.h,
// so that the same line builds on amd64 and arm64 hosts.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -type event -type owner -type rule -type entry -type config -type state -type counter -type prefix_key4 -type prefix_key6 -type addr6 -type port_key -type range_key -type range_rule -type learned -type origin -type origin_key -type seen_key -type seen_flow -type dns_answer -type site_flag -type stat -type verdict -type log_level -type hook -type event_flag -type direction cgwall ../../bpf/cgwall.c

// The same source built for filters whose policy never changes (run, exec):
// rule maps referenced directly, without generations. Its types are the
// object's above.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -cflags "-O2 -g -Wall -Werror -DCGWALL_FIXED -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" cgwallFixed ../../bpf/cgwall.c
