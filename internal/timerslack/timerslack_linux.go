//go:build linux && cgo

package timerslack

/*
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// The states Status reports (the Go side maps each to its own constant).
#define TS_DEFAULT 0   // no ANCHORCHAT_TIMER_SLACK: the default was set
#define TS_ENV 1       // set from ANCHORCHAT_TIMER_SLACK
#define TS_INHERITED 2 // ANCHORCHAT_TIMER_SLACK=0: left as inherited
#define TS_INVALID 3   // ANCHORCHAT_TIMER_SLACK not understood: left as inherited
#define TS_FAILED 4    // prctl refused: left as inherited (errno in anchorchat_timerslack_errno)

static int anchorchat_timerslack_state;
static int anchorchat_timerslack_errno;

// anchorchat_parse_slack reads "<digits><unit>" (unit ns, us, µs, μs or ms)
// or "0" into nanoseconds; it returns 0 on success.
static int anchorchat_parse_slack(const char *s, unsigned long *ns) {
	if (strcmp(s, "0") == 0) {
		*ns = 0;
		return 0;
	}
	if (*s < '0' || *s > '9') {
		return -1;
	}
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0) {
		return -1;
	}
	unsigned long mul;
	if (strcmp(end, "ns") == 0) {
		mul = 1;
	} else if (strcmp(end, "us") == 0 || strcmp(end, "\xc2\xb5s") == 0 || strcmp(end, "\xce\xbcs") == 0) {
		mul = 1000; // "us", micro sign, Greek mu
	} else if (strcmp(end, "ms") == 0) {
		mul = 1000000;
	} else {
		return -1;
	}
	if (v > 1000000000UL / mul) { // more than a second is surely a mistake
		return -1;
	}
	*ns = v * mul;
	return 0;
}

// Runs before main, so before the Go runtime creates its threads: they all
// inherit the slack of this, the first thread.
__attribute__((constructor)) static void anchorchat_timerslack(void) {
	const char *s = getenv("ANCHORCHAT_TIMER_SLACK");
	unsigned long ns = 500000;
	int state = TS_DEFAULT;
	if (s != NULL && *s != '\0') {
		if (anchorchat_parse_slack(s, &ns) != 0) {
			anchorchat_timerslack_state = TS_INVALID;
			return;
		}
		if (ns == 0) {
			anchorchat_timerslack_state = TS_INHERITED;
			return;
		}
		state = TS_ENV;
	}
	if (prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0) != 0) {
		anchorchat_timerslack_errno = errno;
		state = TS_FAILED;
	}
	anchorchat_timerslack_state = state;
}

static int anchorchat_timerslack_get_state(void) { return anchorchat_timerslack_state; }
static int anchorchat_timerslack_get_errno(void) { return anchorchat_timerslack_errno; }
// The raw system call: glibc's prctl returns an int, too small for a slack over 2.1 s.
static long anchorchat_timerslack_get(void) { return syscall(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0); }
*/
import "C"

import (
	"syscall"
	"time"
)

func current() (time.Duration, int, error, bool) {
	slack := time.Duration(C.anchorchat_timerslack_get())
	switch C.anchorchat_timerslack_get_state() {
	case C.TS_DEFAULT:
		return slack, stateDefault, nil, true
	case C.TS_ENV:
		return slack, stateEnv, nil, true
	case C.TS_INHERITED:
		return slack, stateInherited, nil, true
	case C.TS_FAILED:
		return slack, stateFailed, syscall.Errno(C.anchorchat_timerslack_get_errno()), true
	default:
		return slack, stateInvalid, nil, true
	}
}
