//go:build !linux || !cgo

package timerslack

import "time"

func current() (time.Duration, int, bool) { return 0, 0, false }
