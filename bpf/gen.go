package bpf

// Run through `make generate`: it sets $BPF_CFLAGS to the host's multiarch
// include directory, where the kernel headers find asm/types.h. Without it
// clang fails and deletes the committed object it was to rewrite, so the
// first line stops a bare `go generate` before that and says why.
//go:generate sh -c "test -n \"${DOLLAR}BPF_CFLAGS\" || { echo 'bpf: BPF_CFLAGS is empty: run make generate, which sets it to the multiarch include directory' >&2; exit 1; }"
//go:generate go tool bpf2go -target bpfel -cflags "-O2 -g -Wall $BPF_CFLAGS" -type lb4_key -type lb4_service -type lb4_backend -type lb4_affinity_key -type lb4_affinity_val -type lb4_svc_name -type sock4_revnat_key -type sock4_revnat_val Sock sock.c
//go:generate go tool bpf2go -target bpfel -cflags "-O2 -g -Wall $BPF_CFLAGS" -type ct4_key -type ct4_entry TC tc.c
//go:generate go tool bpf2go -target bpfel -cflags "-O2 -g -Wall $BPF_CFLAGS" -type sock4_term_key SockTerm sockterm.c
