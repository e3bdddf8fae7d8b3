// Definitions of the wrappers declared in include/chostnet.h (see the contract there).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include "chostnet.h"

uint32_t chostnet_iff_tap(void) { return IFF_TAP; }
uint32_t chostnet_iff_no_pi(void) { return IFF_NO_PI; }
uint32_t chostnet_iff_vnet_hdr(void) { return IFF_VNET_HDR; }
uint32_t chostnet_tun_f_csum(void) { return TUN_F_CSUM; }
/* Linux 6.2 uapi; the build host's headers may be older. */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
uint32_t chostnet_tun_f_uso(void) { return TUN_F_USO4 | TUN_F_USO6; }

int chostnet_open_tun(void) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int chostnet_tunsetiff(int fd, const char *name, uint32_t flags) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = (short)flags;
    return ioctl(fd, TUNSETIFF, &ifr) < 0 ? -errno : 0;
}

int chostnet_tungetiff(int fd, uint32_t *flags, char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) < 0) return -errno;
    *flags = (uint16_t)ifr.ifr_flags;
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    return 0;
}

int chostnet_set_vnet_hdr_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? -errno : 0; }

int chostnet_set_offload(int fd, uint32_t flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0; }

int chostnet_get_mtu(const char *name) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int r = ioctl(s, SIOCGIFMTU, &ifr);
    int e = errno;
    close(s);
    return r < 0 ? -e : ifr.ifr_mtu;
}

int chostnet_set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -errno;
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}
