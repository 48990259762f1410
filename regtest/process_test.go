package regtest

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortsOutsideEphemeralRange: the ports handed to btcd and LND are
// free, distinct and outside the kernel's ephemeral range, where outgoing
// connections and port-0 listeners could take them before the child binds.
func TestFreePortsOutsideEphemeralRange(t *testing.T) {
	lo, hi := ephemeralRange()
	ports, err := freePorts(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < minPort || p > 65535 || (p >= lo && p <= hi) || seen[p] {
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
		{minPort, 65000, 65001, 65535}, // nothing below
		{minPort + 1, 65000, minPort, 65535},
		{20000, 65535, minPort, 19999}, // nothing above
		{1024, 65535, minPort, 65535},  // the range covers all: any port
		{32768, 60999, minPort, 65535},
	} {
		for range 20000 {
			p := portOutside(c.lo, c.hi)
			inRange := p >= c.lo && p <= c.hi && !(c.lo <= minPort && c.hi == 65535)
			if p < c.min || p > c.max || inRange {
				t.Fatalf("portOutside(%d, %d) = %d, want %d..%d outside the range", c.lo, c.hi, p, c.min, c.max)
			}
		}
	}
}
