// Package freeport picks loopback TCP ports for child processes to listen
// on: free, and out of reach of the ports the kernel hands out by itself.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Loopback picks n distinct free loopback TCP ports outside the kernel's
// ephemeral range. A port from that range (what listening on port 0 gives)
// can be taken between our probe and the child's bind by any outgoing
// connection on the machine (tests running beside ours open thousands), and
// a child may bind seconds after the probe (LND binds its p2p port only once
// synced). Outside the range only an explicit bind can take a port. The
// ports are drawn at random, so that two callers at once do not both try
// the lowest free ones. A child that still finds its port taken should be
// started again on others.
func Loopback(n int) ([]int, error) {
	lo, hi := EphemeralRange()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n {
			return nil, fmt.Errorf("freeport: no free loopback port outside the ephemeral range %d-%d after %d tries", lo, hi, tries)
		}
		p := portOutside(lo, hi)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use (or reserved): draw another
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	return ports, nil
}

// Ports are drawn from [MinPort, 65535] minus the ephemeral range: well
// above the registered services most machines run.
const MinPort = 10000

// EphemeralRange is the kernel's range for port 0 and outgoing connections
// (Linux's default when it cannot be read).
func EphemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l > h {
		return lo, hi
	}
	return l, h
}

// portOutside draws a port in [MinPort, 65535] outside [lo, hi], uniformly;
// if the range covers all of those, any port in [MinPort, 65535].
func portOutside(lo, hi int) int {
	below := max(0, min(lo, 65536)-MinPort)   // MinPort .. lo-1
	above := max(0, 65535-max(hi, MinPort-1)) // max(hi+1, MinPort) .. 65535
	switch k := rand.IntN(max(below+above, 1)); {
	case below+above == 0:
		return MinPort + rand.IntN(65536-MinPort)
	case k < below:
		return MinPort + k
	default:
		return max(hi+1, MinPort) + k - below
	}
}
