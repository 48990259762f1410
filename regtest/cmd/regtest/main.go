// Command regtest is `anchorchat regtest` without the node daemon, for
// working on the harness alone: go run ./regtest/cmd/regtest up.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/anchorchat/anchorchat/regtest"
)

func main() {
	// As `anchorchat`: SIGINT or SIGTERM cancels the command, which stops
	// what it started (a build's go command, a network being brought up)
	// instead of dying with it left running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := regtest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
