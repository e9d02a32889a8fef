/* udp_fwd_streams over AF_XDP: the same forwarding (every stream to port 40000, each packet on
 * to its stream's sink port 50000 + 2 * (SSRC - 0x10000)), but packets reach the forwarder
 * through an XDP program on lo (generic mode, copy) into an AF_XDP socket's rings, are rewritten
 * in place (UDP ports; checksum 0 = none, valid for IPv4) and leave through the TX ring, one
 * sendto() kick per batch. A feasibility probe for issue 5, not a product path.
 * usage: xsk_fwd BPF_OBJ SINK_BASE STREAMS MAX_S IDLE_S */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>
#define NFRAMES 8192
#define FSZ XSK_UMEM__DEFAULT_FRAME_SIZE
#define RING 4096
#define B 64
static int ifindex;
static void detach(void) { bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, NULL); }
static volatile int stop;
static void on_sig(int s) { (void)s; stop = 1; }
int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: xsk_fwd BPF_OBJ SINK_BASE STREAMS MAX_S IDLE_S\n"); return 2; }
    int base = atoi(argv[2]), ns = atoi(argv[3]), maxs = atoi(argv[4]), idle = atoi(argv[5]);
    ifindex = if_nametoindex("lo");
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj)) { fprintf(stderr, "bpf load failed\n"); return 1; }
    int pfd = bpf_program__fd(bpf_object__find_program_by_name(obj, "xsk_redirect"));
    int mfd = bpf_object__find_map_fd_by_name(obj, "xsks");
    if (bpf_xdp_attach(ifindex, pfd, XDP_FLAGS_SKB_MODE, NULL)) { perror("xdp attach"); return 1; }
    atexit(detach);
    signal(SIGTERM, on_sig); signal(SIGINT, on_sig);
    void *buf; if (posix_memalign(&buf, getpagesize(), (size_t)NFRAMES * FSZ)) return 1;
    struct xsk_umem *umem; struct xsk_ring_prod fq, tx; struct xsk_ring_cons cq, rx;
    struct xsk_umem_config ucfg = {.fill_size = RING, .comp_size = RING, .frame_size = FSZ, .frame_headroom = 0};
    if (xsk_umem__create(&umem, buf, (size_t)NFRAMES * FSZ, &fq, &cq, &ucfg)) { perror("umem"); return 1; }
    struct xsk_socket_config cfg = {.rx_size = RING, .tx_size = RING, .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
                                    .xdp_flags = XDP_FLAGS_SKB_MODE, .bind_flags = XDP_COPY};
    struct xsk_socket *xsk;
    int e = xsk_socket__create(&xsk, "lo", 0, umem, &rx, &tx, &cfg);
    if (e) { fprintf(stderr, "xsk_socket__create: %s\n", strerror(-e)); return 1; }
    int xfd = xsk_socket__fd(xsk); __u32 k = 0;
    if (bpf_map_update_elem(mfd, &k, &xfd, 0)) { perror("xskmap"); return 1; }
    __u32 idx;
    if (xsk_ring_prod__reserve(&fq, RING, &idx) != RING) return 1;
    for (int i = 0; i < RING; i++) *xsk_ring_prod__fill_addr(&fq, idx + i) = (__u64)i * FSZ;
    xsk_ring_prod__submit(&fq, RING);
    long rxn = 0, txn = 0, kicks = 0; time_t t0 = time(0), last = 0; unsigned pending = 0;
    printf("ready\n"); fflush(stdout);
    while (!stop && time(0) - t0 < maxs && !(last && time(0) - last > idle)) {
        __u32 ic, n = xsk_ring_cons__peek(&cq, RING, &ic);
        if (n) {
            __u32 ifq;
            while (xsk_ring_prod__reserve(&fq, n, &ifq) != n) ;
            for (__u32 i = 0; i < n; i++) *xsk_ring_prod__fill_addr(&fq, ifq + i) = *xsk_ring_cons__comp_addr(&cq, ic + i);
            xsk_ring_prod__submit(&fq, n); xsk_ring_cons__release(&cq, n); pending -= n;
        }
        __u32 ir; n = xsk_ring_cons__peek(&rx, B, &ir);
        if (!n) {
            if (pending) { sendto(xfd, NULL, 0, MSG_DONTWAIT, NULL, 0); kicks++; continue; }
            struct pollfd p = {.fd = xfd, .events = POLLIN}; poll(&p, 1, 200); continue;
        }
        __u32 it;
        while (xsk_ring_prod__reserve(&tx, n, &it) != n) { sendto(xfd, NULL, 0, MSG_DONTWAIT, NULL, 0); kicks++; }
        for (__u32 i = 0; i < n; i++) {
            const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, ir + i);
            unsigned char *pkt = xsk_umem__get_data(buf, d->addr);
            unsigned char *udp = pkt + 14 + 20, *h = udp + 8;
            unsigned st = ((unsigned)h[8] << 24 | h[9] << 16 | h[10] << 8 | h[11]) - 0x10000;
            unsigned short dst = htons(base + 2 * (st < (unsigned)ns ? st : 0)), src = htons(40000);
            memcpy(udp, &src, 2); memcpy(udp + 2, &dst, 2); udp[6] = udp[7] = 0;
            struct xdp_desc *t = xsk_ring_prod__tx_desc(&tx, it + i); t->addr = d->addr; t->len = d->len;
        }
        xsk_ring_prod__submit(&tx, n); xsk_ring_cons__release(&rx, n);
        rxn += n; txn += n; pending += n; last = time(0);
        sendto(xfd, NULL, 0, MSG_DONTWAIT, NULL, 0); kicks++;
    }
    printf("fwd_rx=%ld fwd_tx=%ld kicks=%ld\n", rxn, txn, kicks);
    xsk_socket__delete(xsk); xsk_umem__delete(umem);
    return 0;
}
