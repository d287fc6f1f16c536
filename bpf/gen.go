package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" -type lb4_key -type lb4_service -type lb4_backend -type lb4_affinity_key -type lb4_affinity_val -type lb4_svc_name -type sock4_revnat_key -type sock4_revnat_val Sock sock.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" -type ct4_key -type ct4_entry TC tc.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" -type sock4_term_key SockTerm sockterm.c
