// autobind-scale: does creating AF_UNIX datagram pairs slow down as more of
// them exist, and is it the abstract names? Creates N socketpairs, with or
// without autobinding both ends (what the mask fd emulation does), with or
// without a parked 1 KiB datagram, then times a random pair's empty send and
// receive. Prints one line per configuration.
//
//   autobind-scale N BIND(0|1) PARK(0|1)
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
static unsigned long long ns(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static int cmp(const void*a,const void*b){unsigned long long x=*(unsigned long long*)a,y=*(unsigned long long*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  if(argc!=4){fprintf(stderr,"usage: autobind-scale N BIND(0|1) PARK(0|1)\n");return 2;}
  int n=atoi(argv[1]); int bindit=atoi(argv[2]); int park=atoi(argv[3]);
  struct rlimit rl={1048576,1048576}; setrlimit(RLIMIT_NOFILE,&rl);
  int *a=malloc(n*sizeof(int)),*b=malloc(n*sizeof(int));
  unsigned long long t0=ns();
  for(int i=0;i<n;i++){int sv[2]; if(socketpair(AF_UNIX,SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK,0,sv)){perror("socketpair");return 1;}
    a[i]=sv[0];b[i]=sv[1];
    if(bindit){sa_family_t f=AF_UNIX; bind(a[i],(struct sockaddr*)&f,sizeof f); bind(b[i],(struct sockaddr*)&f,sizeof f);}
    if(park){char buf[1024]={0}; send(a[i],buf,sizeof buf,0);}
  }
  unsigned long long t1=ns();
  int T=300; unsigned long long *s=malloc(T*8),*r=malloc(T*8);
  for(int k=0;k<T;k++){int i=rand()%n; char c; unsigned long long x=ns(); send(b[i],&c,0,0); unsigned long long y=ns(); recv(a[i],&c,1,0); unsigned long long z=ns(); s[k]=y-x; r[k]=z-y;}
  qsort(s,T,8,cmp); qsort(r,T,8,cmp);
  printf("autobind-scale n=%d bind=%d park=%d create_us=%.1f send_p50_ns=%llu recv_p50_ns=%llu\n",n,bindit,park,(t1-t0)/1e3/n,s[T/2],r[T/2]);
  return 0;}
