// Package timerslack sets the node's timer slack: how late Linux may wake a
// thread from a timed sleep, so that it can group wake-ups. Importing the
// package sets it, for every thread of the process, before the Go runtime
// starts any; it cannot be changed later for the threads already running.
//
// Why: the Go runtime's monitor thread (sysmon) sleeps 20 µs at a time while
// any call into C runs long, and the node's calls into C (a run of signature
// checks in libsecp256k1, a batch of SQLite writes) always do. Each of those
// wake-ups costs a timer and two context switches; on a virtual machine
// under the ingest benchmark they took 5-10 % of both cores (the kernel's
// default slack of 50 µs allows about 4,000 a second; golang/go#18236). A
// slack of 500 µs cuts the process's context switches by two thirds. The
// price: a timer in the node may fire up to that much late, which nothing in
// the node needs to be finer than.
//
// The environment variable ANCHORCHAT_TIMER_SLACK sets another value: a
// whole number with the unit ns, us or ms ("1ms"), or 0 (with or without a
// unit) to keep the slack the process inherited, for example from systemd's
// TimerSlackNSec=.
package timerslack

import (
	"fmt"
	"time"
)

// Env is the environment variable read at start.
const Env = "ANCHORCHAT_TIMER_SLACK"

// Default is the slack set when Env is not.
const Default = 500 * time.Microsecond

// Status reports the process's timer slack and how it was chosen. err is
// set when Env holds something that is not a duration this package reads;
// the slack was then left as inherited, and a command should refuse to run.
func Status() (slack time.Duration, how string, err error) {
	slack, state, errno, supported := current()
	if !supported {
		return 0, "not set: needs Linux and cgo", nil
	}
	switch state {
	case stateDefault:
		how = fmt.Sprintf("the default (%s to change it)", Env)
	case stateEnv:
		how = "from " + Env
	case stateInherited:
		how = "inherited (" + Env + "=0)"
	case stateFailed:
		how = fmt.Sprintf("inherited (setting it failed: %v)", errno)
	default:
		err = fmt.Errorf("%s: want a whole duration in ns, us or ms, like 500us, or 0 to keep the inherited slack", Env)
		how = "inherited (" + Env + " not understood)"
	}
	return slack, how, err
}

const (
	stateDefault = iota
	stateEnv
	stateInherited
	stateInvalid
	stateFailed
)
