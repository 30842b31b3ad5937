#!/usr/bin/env bash
# test.sh tests everything, as root, on a Debian machine that has Go: it
# installs the packages the tests need where they are missing, starts the
# services they need, mounts bpffs, runs every Go test with CI=true (so that a
# missing piece fails instead of skipping), then each fuzz target for a bounded
# time. A second run installs nothing and starts only what is not running.
#
# .ci/run sources this file for install_packages, so main runs only when the
# file is executed.
set -euo pipefail

# The Debian packages the tests need, now or once the tests of the named
# features exist (DESIGN.md). Only the missing ones are installed.
PACKAGES=(
	nftables     # bench TestQuickSmallest: nft, cgwall's comparison
	iptables     # bench TestQuickSmallest: iptables-nft-restore, iptables-legacy
	procps       # bench TestQuickSmallest: sysctl inside its namespaces
	iproute2     # e2e and bench: ip netns, ip link
	util-linux   # e2e: nsenter, unshare, setpriv
	curl         # e2e TestCurlFailsFast: a stock client against the connect hook
	clang-19     # go generate: bpf2go compiles bpf/cgwall.c (.ci/run checks the output)
	llvm-19      # go generate: llvm-strip-19
	libbpf-dev   # go generate: bpf_helpers.h
	# Will be needed by the tests of protocol rules (icmp, icmpv6): a stock
	# client next to e2e TestRunBlocksICMP's raw-socket probe.
	iputils-ping
	# Will be needed by the tests of name rules: an upstream DNS server in a
	# test namespace, and a stock client. dnsmasq-base is the dnsmasq binary
	# without the dnsmasq package's system service, which would listen on
	# port 53 and can rewrite /etc/resolv.conf.
	dnsmasq-base
	bind9-dnsutils # dig
	# Will be needed by --container tests against real containers: dockerd
	# (started by start_dockerd, never with its default 172.17.0.0/16), and
	# busybox for an image built offline.
	docker.io
	busybox-static
)

# The services the tests need, each started by its start_NAME function when
# it is not running. dockerd: e2e TestContainerByNameAndID, a real container
# filtered by name and ID; deploy TestDockerBuild, the agent's image built
# from the Dockerfile.
SERVICES=(dockerd)

# The fuzz targets, "PACKAGE FuzzName", each run for FUZZTIME after the tests.
# Every func Fuzz in the tree belongs here: test.sh fails while one is missing.
FUZZ_TARGETS=(
	"./internal/datapath FuzzDecodeEvent"
	"./internal/events FuzzWrite"
	"./internal/policy FuzzParsePrefix"
	"./internal/policy FuzzLoadFile"
	"./internal/policy FuzzAddList"
	"./internal/learn FuzzMerge"
)
FUZZTIME=${FUZZTIME:-20s}

# dockerd's bridge: a benchmarking range (DESIGN.md), never docker's default.
DOCKER_BIP=198.18.100.1/24

die() {
	echo "test.sh: $*" >&2
	exit 1
}

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# install_packages installs the PACKAGES that are missing, with one apt-get
# update, and does nothing when none is.
install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	echo "--- install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# A package's own service (dockerd with its default bridge) must not
	# start: the tests start what they need, as they need it. policy-rc.d
	# is Debian's switch for that, honoured by invoke-rc.d and systemd's
	# deb-systemd-invoke alike; cleanup removes it again.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		catch_exit
		printf '#!/bin/sh\n# test.sh: no service starts while it installs packages\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_OURS=1
	fi
	local rc=0
	apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
	remove_policy_rc
	[ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

POLICY_RC_OURS=
remove_policy_rc() {
	if [ -n "$POLICY_RC_OURS" ]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_OURS=
	fi
}

# mount_bpffs mounts bpffs at /sys/fs/bpf, where persistent policies are
# pinned, unless it is there.
mount_bpffs() {
	if ! awk '$5 == "/sys/fs/bpf" && $(NF-2) == "bpf" { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo "--- mount bpffs at /sys/fs/bpf"
		mount -t bpf bpf /sys/fs/bpf
	fi
}

# start_dockerd starts dockerd with its bridge on DOCKER_BIP unless one is
# running, and waits until it answers on its socket; cleanup stops it when
# test.sh ends. A dockerd already running is used only if its bridge is
# DOCKER_BIP's network: the tests send traffic to documentation and
# benchmarking ranges only. The one started here also leaves the host's
# firewall and forwarding alone (--iptables=false --ip-forward=false): the
# tests' containers talk to the host only, and so cannot reach further.
DOCKERD_PID=
start_dockerd() {
	local pidfile=/run/docker.pid
	if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		check_docker_bridge "restart it with --bip $DOCKER_BIP"
		return
	fi
	echo "--- start dockerd --bip $DOCKER_BIP"
	local log=/tmp/cgwall-test-dockerd.log
	catch_exit
	dockerd --bip "$DOCKER_BIP" --iptables=false --ip-forward=false --pidfile "$pidfile" >"$log" 2>&1 &
	DOCKERD_PID=$!
	# Poll the socket until dockerd answers; fail at once if it exits.
	local deadline=$((SECONDS + 60))
	until docker version >/dev/null 2>&1; do
		kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited; the end of $log: $(tail -n 3 "$log")"
		[ $SECONDS -lt $deadline ] || die "dockerd did not answer within 60 s; the end of $log: $(tail -n 3 "$log")"
		sleep 0.2
	done
	# Whatever answers on the socket must be the dockerd started here, or
	# one just as safe (a socket-activated docker.service would not be).
	check_docker_bridge "stop the dockerd that answers on /run/docker.sock, then run test.sh again"
}

# check_docker_bridge dies, saying what to do, unless dockerd's bridge is on
# DOCKER_BIP's network.
check_docker_bridge() {
	local subnet
	subnet=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
	[ "$subnet" = "${DOCKER_BIP%.*}.0/${DOCKER_BIP#*/}" ] ||
		die "dockerd is running with its bridge on $subnet, not $DOCKER_BIP's network: $1"
}

# cleanup undoes what test.sh set up for its own run: its policy-rc.d, and
# the services it started.
cleanup() {
	remove_policy_rc
	if [ -n "$DOCKERD_PID" ]; then
		kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null
		DOCKERD_PID=
	fi
	return 0
}

# catch_exit runs cleanup however test.sh ends, Ctrl-C and SIGTERM included.
catch_exit() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# check_fuzz_list fails if the tree has a func Fuzz that FUZZ_TARGETS lacks.
check_fuzz_list() {
	local file name entry t unlisted=()
	while IFS=: read -r file name; do
		name=${name#func }
		entry="./$(dirname "${file#./}") ${name%(}"
		for t in "${FUZZ_TARGETS[@]}" ""; do
			[ "$t" = "$entry" ] && break
		done
		[ "$t" = "$entry" ] || unlisted+=("$entry")
	done < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . || true)
	[ ${#unlisted[@]} -eq 0 ] ||
		die "add to FUZZ_TARGETS in test.sh: $(printf '"%s" ' "${unlisted[@]}")"
}

# run_fuzz runs each of FUZZ_TARGETS for FUZZTIME. A run that fails without
# writing a failing input is Go 1.26's fuzz runner timing out on its own
# (go.dev/issue/75804): it is tried once more. One that found an input fails.
run_fuzz() {
	local target pkg name try
	for target in "${FUZZ_TARGETS[@]}"; do
		read -r pkg name <<<"$target"
		for try in 1 2; do
			echo "--- fuzz $name in $pkg for $FUZZTIME"
			go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg" && continue 2
			[ -z "$(git status --porcelain -- "$pkg/testdata/fuzz/$name" 2>/dev/null)" ] ||
				die "fuzzing $name found an input that fails: see $pkg/testdata/fuzz/$name"
		done
		die "fuzzing $name failed twice without a failing input"
	done
}

main() {
	if [ $# -gt 0 ]; then
		echo "test.sh: takes no arguments, it runs every test (FUZZTIME=10s ./test.sh fuzzes for less)" >&2
		exit 2
	fi
	cd "$(dirname "$0")"
	[ "$(id -u)" -eq 0 ] || die "run ./test.sh as root (or prefix it with sudo): the tests load BPF programs and make cgroups and network namespaces"
	command -v go >/dev/null || die "go is not on PATH: install Go (go.mod names the version); sudo resets PATH, so: sudo env PATH=\"\$PATH\" ./test.sh"
	check_fuzz_list
	catch_exit

	install_packages
	mount_bpffs
	local s
	for s in "${SERVICES[@]}"; do
		"start_$s"
	done

	export CI=true
	echo "--- go test -count=1 ./..."
	# Through .ci/summary.py: the packages' lines as go test prints them, the
	# output of what failed, and the count of tests passed, failed, skipped.
	go test -count=1 -json ./... | python3 .ci/summary.py

	run_fuzz
	echo "--- all tests passed in ${SECONDS}s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	main "$@"
fi
