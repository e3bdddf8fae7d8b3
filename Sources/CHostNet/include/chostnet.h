// Thin wrappers over the tun/tap ioctls (linux/if_tun.h) for Swift: the request macros
// do not import. Contract: a value or -errno, no state; fixed-width types only here.
#pragma once
#include <stdint.h>

/// IFF_* and TUN_F_* bits, so Swift need not import the kernel headers.
uint32_t chostnet_iff_tap(void);
uint32_t chostnet_iff_no_pi(void);
uint32_t chostnet_iff_vnet_hdr(void);
uint32_t chostnet_tun_f_csum(void);
/* TUN_F_USO4 | TUN_F_USO6: the kernel knows UDP segmentation offload (Linux 6.2+). */
uint32_t chostnet_tun_f_uso(void);

/// open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC).
int chostnet_open_tun(void);
/// TUNSETIFF: attach `fd` to the interface `name` (created when it does not exist and the
/// caller has CAP_NET_ADMIN) with `flags`.
int chostnet_tunsetiff(int fd, const char *name, uint32_t flags);
/// TUNGETIFF: the attached interface's flags (IFF_TAP, IFF_VNET_HDR, ...) and name
/// (`name` needs 16 bytes, NUL-terminated).
int chostnet_tungetiff(int fd, uint32_t *flags, char *name);
/// TUNSETVNETHDRSZ.
int chostnet_set_vnet_hdr_size(int fd, int size);
/// TUNSETOFFLOAD with TUN_F_* bits.
int chostnet_set_offload(int fd, uint32_t flags);
/// SIOCGIFMTU for interface `name` (through a throwaway AF_INET socket).
int chostnet_get_mtu(const char *name);
/// fcntl O_NONBLOCK on.
int chostnet_set_nonblocking(int fd);
