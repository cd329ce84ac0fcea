/* Linux system calls that `import Glibc` does not bring: epoll, eventfd, timerfd, TCP options. */
#ifndef C_SYSTEM_SHIM_H
#define C_SYSTEM_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <fcntl.h>
#include <errno.h>
#include <unistd.h>
#include <signal.h>
#endif
