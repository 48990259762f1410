// Command regtest is `anchorchat regtest` without the node daemon, for
// working on the harness alone: go run ./regtest/cmd/regtest up.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/anchorchat/anchorchat/regtest"
)

func main() {
	if err := regtest.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
