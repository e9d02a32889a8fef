/* The raw forwarder of the reference kit (one socket, recvmmsg/sendmmsg, batches of 32), but
 * forwarding each packet to its own stream's sink port: 50000 + 2 * (SSRC - 0x10000), the sink
 * sockets rtp_bench.py's udp_sink binds for N streams. It is the kernel's floor for the same
 * delivery sipedge and rtpengine make (one packet to each of many receiving sockets, each
 * woken on its own), where the kit's forwarder sends every packet to one socket.
 * Exits IDLE_S after the last packet (once traffic started) or after MAX_S.
 * usage: udp_fwd_streams LISTEN_PORT SINK_BASE STREAMS MAX_S IDLE_S */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#define B 32
int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: udp_fwd_streams LISTEN_PORT SINK_BASE STREAMS MAX_S IDLE_S\n"); return 2; }
    int lp = atoi(argv[1]), base = atoi(argv[2]), ns = atoi(argv[3]), maxs = atoi(argv[4]), idle = atoi(argv[5]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0), bs = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bs, sizeof bs);
    struct timeval tv = {0, 200000}; setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lp)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(fd, (void *)&a, sizeof a)) { perror("bind"); return 1; }
    struct sockaddr_in *d = calloc(ns, sizeof *d);
    for (int i = 0; i < ns; i++) { d[i] = a; d[i].sin_port = htons(base + 2 * i); }
    static unsigned char buf[B][2048]; struct mmsghdr m[B]; struct iovec io[B];
    for (int j = 0; j < B; j++) { io[j] = (struct iovec){buf[j], 2048}; m[j].msg_hdr = (struct msghdr){.msg_iov = &io[j], .msg_iovlen = 1}; }
    long rx = 0, tx = 0; time_t t0 = time(0), last = 0;
    printf("ready\n"); fflush(stdout);
    while (time(0) - t0 < maxs && !(last && time(0) - last > idle)) {
        int n = recvmmsg(fd, m, B, MSG_WAITFORONE, 0);
        if (n <= 0) continue;
        rx += n; last = time(0);
        for (int j = 0; j < n; j++) {
            unsigned char *h = buf[j];
            unsigned st = ((unsigned)h[8] << 24 | h[9] << 16 | h[10] << 8 | h[11]) - 0x10000;
            io[j].iov_len = m[j].msg_len;
            m[j].msg_hdr.msg_name = &d[st < (unsigned)ns ? st : 0]; m[j].msg_hdr.msg_namelen = sizeof *d;
        }
        int s = sendmmsg(fd, m, n, 0); if (s > 0) tx += s;
        for (int j = 0; j < n; j++) { io[j].iov_len = 2048; m[j].msg_hdr.msg_name = 0; m[j].msg_hdr.msg_namelen = 0; }
    }
    printf("fwd_rx=%ld fwd_tx=%ld\n", rx, tx);
    return 0;
}
