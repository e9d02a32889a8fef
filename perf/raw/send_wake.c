// How long sendmmsg takes when its receiver (on the other CPU) is blocked, against already awake:
// on a VM, waking an idle receiver is paid by the sender. perf/RESULTS.md, session 13.
// usage: send_wake ROUNDS BATCH GAP_US   (loopback 127.0.0.1:5999 only; bounded by ROUNDS)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int rounds=atoi(argv[1]); int batch=atoi(argv[2]); double gap_us=atof(argv[3]);
  int rx=socket(AF_INET,SOCK_DGRAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(5999)};
  inet_pton(AF_INET,"127.0.0.1",&a.sin_addr); int bs=8<<20; setsockopt(rx,SOL_SOCKET,SO_RCVBUF,&bs,sizeof bs);
  if(bind(rx,(void*)&a,sizeof a)){perror("bind");return 1;}
  pid_t p=fork();
  if(p==0){ cpu_set_t s;CPU_ZERO(&s);CPU_SET(1,&s);sched_setaffinity(0,sizeof s,&s);
    char b[2048]; struct timeval tv={2,0}; setsockopt(rx,SOL_SOCKET,SO_RCVTIMEO,&tv,sizeof tv);
    while(recv(rx,b,sizeof b,0)>0){} _exit(0);}
  cpu_set_t s;CPU_ZERO(&s);CPU_SET(0,&s);sched_setaffinity(0,sizeof s,&s);
  int tx=socket(AF_INET,SOCK_DGRAM,0);
  char msg[500]; memset(msg,'x',sizeof msg);
  struct mmsghdr m[64]; struct iovec io[64];
  for(int i=0;i<batch;i++){io[i]=(struct iovec){msg,sizeof msg}; m[i].msg_hdr=(struct msghdr){.msg_name=&a,.msg_namelen=sizeof a,.msg_iov=&io[i],.msg_iovlen=1};}
  double in=0; long n=0;
  for(int r=0;r<rounds;r++){ double t0=now(); n+=sendmmsg(tx,m,batch,0); in+=now()-t0; double e=now()+gap_us*1e-6; while(now()<e){} }
  printf("batch=%d gap=%.0fus: %.2f us per call, %.3f us per datagram\n",batch,gap_us,in*1e6/rounds,in*1e6/n);
  wait(0); return 0;}
