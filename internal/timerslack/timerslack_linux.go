//go:build linux && cgo

package timerslack

/*
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

static int anchorchat_timerslack_state; // the package's state* constants

// anchorchat_parse_slack reads "<digits><unit>" (unit ns, us, µs or ms) or
// "0" into nanoseconds; it returns 0 on success.
static int anchorchat_parse_slack(const char *s, unsigned long *ns) {
	if (strcmp(s, "0") == 0) {
		*ns = 0;
		return 0;
	}
	if (*s < '0' || *s > '9') {
		return -1;
	}
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	unsigned long mul;
	if (strcmp(end, "ns") == 0) {
		mul = 1;
	} else if (strcmp(end, "us") == 0 || strcmp(end, "\xc2\xb5s") == 0) {
		mul = 1000;
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
	if (s != NULL && *s != '\0') {
		if (anchorchat_parse_slack(s, &ns) != 0) {
			anchorchat_timerslack_state = 3;
			return;
		}
		if (ns == 0) {
			anchorchat_timerslack_state = 2;
			return;
		}
		anchorchat_timerslack_state = 1;
	}
	prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0);
}

static int anchorchat_timerslack_get_state(void) { return anchorchat_timerslack_state; }
static long anchorchat_timerslack_get(void) { return prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }
*/
import "C"

import "time"

func current() (time.Duration, int, bool) {
	return time.Duration(C.anchorchat_timerslack_get()), int(C.anchorchat_timerslack_get_state()), true
}
