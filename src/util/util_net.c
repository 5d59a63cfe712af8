/* Socket addresses: parsing "host:port", loopback tests and CIDR allow-lists. */
#include "util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int
mb_sockaddr_parse(const char *hostport, struct mb_sockaddr *out, struct mb_err *err)
{
	char host[256];
	const char *colon, *port;
	struct addrinfo hints, *res = NULL;
	size_t hlen;
	int64_t pnum;
	int rc;

	if (hostport[0] == '[') {
		const char *rb = strchr(hostport, ']');
		if (rb == NULL || rb[1] != ':') {
			mb_err_set(err, MB_EINVAL, "'%s' is not [ipv6]:port", hostport);
			return -1;
		}
		hlen = (size_t)(rb - hostport - 1);
		if (hlen >= sizeof(host))
			goto bad;
		memcpy(host, hostport + 1, hlen);
		host[hlen] = '\0';
		port = rb + 2;
	} else {
		colon = strrchr(hostport, ':');
		if (colon == NULL)
			goto bad;
		hlen = (size_t)(colon - hostport);
		if (hlen >= sizeof(host) || hlen == 0)
			goto bad;
		memcpy(host, hostport, hlen);
		host[hlen] = '\0';
		port = colon + 1;
		if (strchr(host, ':')) {
			mb_err_set(err, MB_EINVAL,
			           "'%s': write an IPv6 address in brackets, as [2001:db8::1]:25",
			           hostport);
			return -1;
		}
	}
	if (!all_digits(port) || mb_parse_int(port, &pnum) < 0 || pnum < 0 || pnum > 65535) {
		mb_err_set(err, MB_EINVAL, "'%s': port must be a number from 0 to 65535", hostport);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL) {
		mb_err_set(err, MB_EINVAL, "'%s': cannot resolve host: %s", hostport,
		           gai_strerror(rc));
		return -1;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	mb_err_set(err, MB_EINVAL, "'%s' is not host:port (e.g. 127.0.0.1:2525 or [::1]:2525)",
	           hostport);
	return -1;
}

bool
mb_sockaddr_is_loopback(const struct mb_sockaddr *a)
{
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return in6->sin6_addr.s6_addr[12] == 127;
		return false;
	}
	return a->ss.ss_family == AF_UNIX;
}

bool
mb_url_host_is_loopback(const char *rest)
{
	size_t alen = strcspn(rest, "/?#"), hlen;
	const char *host = rest, *at;
	unsigned char addr[16];
	char buf[256];

	for (at = rest; at < rest + alen; at++) {
		if (*at == '@')
			host = at + 1;
	}
	alen -= (size_t)(host - rest);
	if (*host == '[') {
		host++;
		hlen = strcspn(host, "]");
		if (hlen >= alen)
			return false;
	} else {
		hlen = strcspn(host, ":/?#");
	}
	if (hlen == 0 || hlen >= sizeof(buf))
		return false;
	memcpy(buf, host, hlen);
	buf[hlen] = '\0';
	if (strcasecmp(buf, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, buf, addr) == 1)
		return addr[0] == 127;
	if (inet_pton(AF_INET6, buf, addr) == 1)
		return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr);
	return false;
}

void
mb_sockaddr_host(const struct mb_sockaddr *a, char *out, size_t outlen)
{
	if (a->ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, out,
		          (socklen_t)outlen);
	else if (a->ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, out,
		          (socklen_t)outlen);
	else
		snprintf(out, outlen, "local");
}

int
mb_sockaddr_port(const struct mb_sockaddr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

int
mb_cidr_parse(const char *s, struct mb_cidr *out)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int64_t prefix;
	int max;

	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	if (slash == NULL)
		prefix = max;
	else if (!all_digits(slash + 1) || mb_parse_int(slash + 1, &prefix) < 0 || prefix < 0 ||
	         prefix > max)
		return -1;
	out->prefix = (int)prefix;
	return 0;
}

static bool
prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ b[full]) & (0xff << (8 - rest))) == 0;
}

bool
mb_cidr_match(const struct mb_cidr *c, const struct mb_sockaddr *a)
{
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
		return c->family == AF_INET &&
		       prefix_equal(c->addr, (const unsigned char *)&in->sin_addr, c->prefix);
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
		const unsigned char *b = in6->sin6_addr.s6_addr;
		if (c->family == AF_INET6)
			return prefix_equal(c->addr, b, c->prefix);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return prefix_equal(c->addr, b + 12, c->prefix);
	}
	return false;
}
