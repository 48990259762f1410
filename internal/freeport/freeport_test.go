package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopbackOutsideEphemeralRange: the ports handed to btcd and LND are
// free, distinct and outside the kernel's ephemeral range, where outgoing
// connections and port-0 listeners could take them before the child binds.
func TestLoopbackOutsideEphemeralRange(t *testing.T) {
	lo, hi := EphemeralRange()
	ports, err := Loopback(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < MinPort || p > 65535 || (p >= lo && p <= hi) || seen[p] {
			t.Fatalf("port %d (ephemeral range %d-%d, seen %v)", p, lo, hi, seen[p])
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}

	// At the edges of the range.
	for _, c := range []struct{ lo, hi, min, max int }{
		{MinPort, 65000, 65001, 65535}, // nothing below
		{MinPort + 1, 65000, MinPort, 65535},
		{20000, 65535, MinPort, 19999}, // nothing above
		{1024, 65535, MinPort, 65535},  // the range covers all: any port
		{32768, 60999, MinPort, 65535},
	} {
		for range 20000 {
			p := portOutside(c.lo, c.hi)
			inRange := p >= c.lo && p <= c.hi && !(c.lo <= MinPort && c.hi == 65535)
			if p < c.min || p > c.max || inRange {
				t.Fatalf("portOutside(%d, %d) = %d, want %d..%d outside the range", c.lo, c.hi, p, c.min, c.max)
			}
		}
	}
}
