package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/anchorchat/anchorchat/regtest"
)

func init() {
	register(&command{name: "regtest", summary: "a local btcd + LND + anchorchat network: regtest up|down|status|mine|fund|build", run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the anchorchat binary: %w", err)
		}
		return regtest.MainWithNodes(ctx, args, stdout, stderr, regtest.AnchorchatNodes(exe))
	}})
}
