// Costs of candidate POLLIN/POLLOUT mechanisms for the emulation, against eventfd.
// Build and run: gcc -O2 -o /tmp/mechanisms Benchmarks/c/mechanisms.c && /tmp/mechanisms
#define _GNU_SOURCE
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static uint64_t now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
int main(){
  int l=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(INADDR_LOOPBACK)}; socklen_t al=sizeof a;
  bind(l,(void*)&a,al); listen(l,1); getsockname(l,(void*)&a,&al);
  int c=socket(AF_INET,SOCK_STREAM,0); connect(c,(void*)&a,al); int s=accept(l,0,0);
  send(s,"x",1,0); usleep(10000);
  int N=200000; int one=1,two=2;
  struct pollfd p={.fd=c,.events=POLLIN};
  setsockopt(c,SOL_SOCKET,SO_RCVLOWAT,&two,4); poll(&p,1,0); printf("lowat2 revents=%x\n",p.revents);
  setsockopt(c,SOL_SOCKET,SO_RCVLOWAT,&one,4); poll(&p,1,0); printf("lowat1 revents=%x\n",p.revents);
  uint64_t t0=now(); for(int i=0;i<N;i++){setsockopt(c,SOL_SOCKET,SO_RCVLOWAT,&two,4);setsockopt(c,SOL_SOCKET,SO_RCVLOWAT,&one,4);} uint64_t t1=now();
  int e=eventfd(0,EFD_NONBLOCK); uint64_t v=1;
  uint64_t t2=now(); for(int i=0;i<N;i++){write(e,&v,8);read(e,&v,8);} uint64_t t3=now();
  int sp[2]; socketpair(AF_UNIX,SOCK_DGRAM|SOCK_NONBLOCK,0,sp); char b;
  uint64_t t4=now(); for(int i=0;i<N;i++){send(sp[1],&b,0,MSG_DONTWAIT);recv(sp[0],&b,1,MSG_DONTWAIT);} uint64_t t5=now();
  int sbuf0=0, sbuf1=65536; 
  uint64_t t6=now(); for(int i=0;i<N;i++){setsockopt(sp[0],SOL_SOCKET,SO_SNDBUF,&sbuf1,4);setsockopt(sp[0],SOL_SOCKET,SO_SNDBUF,&sbuf0,4);} uint64_t t7=now();
  // The emulation's POLLOUT: the same toggle with a 1 KiB datagram parked
  // (charged to the sender's buffer), so each toggle really flips POLLOUT.
  int dp[2]; socketpair(AF_UNIX,SOCK_DGRAM|SOCK_NONBLOCK,0,dp); char park[1024]={0};
  send(dp[0],park,sizeof park,MSG_DONTWAIT);
  uint64_t t8=now(); for(int i=0;i<N;i++){setsockopt(dp[0],SOL_SOCKET,SO_SNDBUF,&sbuf1,4);setsockopt(dp[0],SOL_SOCKET,SO_SNDBUF,&sbuf0,4);} uint64_t t9=now();
  struct pollfd q={.fd=dp[0],.events=POLLOUT}; poll(&q,1,0); printf("parked: revents at the minimum sndbuf=%x\n",q.revents);
  printf("tcp rcvlowat toggle pair %.0f ns\neventfd w+r %.0f ns\nunix dgram send+recv %.0f ns\nsndbuf toggle pair %.0f ns\nsndbuf toggle pair, datagram parked %.0f ns\n",(t1-t0)/(double)N,(t3-t2)/(double)N,(t5-t4)/(double)N,(t7-t6)/(double)N,(t9-t8)/(double)N);
}
