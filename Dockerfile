# The cgwall agent's image: one static binary, nothing else. No base image,
# no shell, no package manager: nothing in it to exploit but cgwall, and
# nothing to pull, so it builds offline.
#
# Build the binary first, then the image, from the repository's root
# (.dockerignore sends docker the binary alone):
#
#   CGO_ENABLED=0 go build -trimpath -o cgwall ./cmd/cgwall
#   docker build -t cgwall-agent:dev .
#
# The binary must be static (CGO_ENABLED=0): scratch has no libc to load.
# The BPF objects are embedded in it, so it needs no other file.
#
# Run (docs/kubernetes.md has the DaemonSet; this is the same on one host):
#
#   docker run -d --name cgwall-agent --restart unless-stopped \
#     --cap-drop ALL --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add BPF --cap-add PERFMON \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /sys/fs/bpf:/sys/fs/bpf \
#     -v /etc/cgwall/policies:/etc/cgwall/policies:ro -p 127.0.0.1:9464:9464 \
#     cgwall-agent:dev
FROM scratch

COPY cgwall /cgwall

# The agent's privileges are root's with four capabilities (docs/kubernetes.md
# says why each): the store in bpffs is root's, mode 0700.
USER 0:0

# /metrics and /healthz (the CMD's --metrics).
EXPOSE 9464

ENTRYPOINT ["/cgwall", "agent"]
# Every address of the container's network namespace, so that the kubelet's
# probes and Prometheus reach it on the pod's IP; a host without a pod
# network passes --metrics 127.0.0.1:9464 instead.
CMD ["--policies", "/etc/cgwall/policies", "--metrics", "0.0.0.0:9464"]
