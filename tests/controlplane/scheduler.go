package main

import (
	"context"

	"github.com/spf13/pflag"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// schedulerArgs: the scheduler k3s embeds, with its own identity, no leader
// election (single process) and no serving port.
func schedulerArgs(f *files) []string {
	return []string{
		"--kubeconfig=" + f.schedulerKubeconfig,
		"--authentication-kubeconfig=" + f.schedulerKubeconfig,
		"--authorization-kubeconfig=" + f.schedulerKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}
}

// runScheduler does what kube-scheduler's cobra command does, minus its
// process-wide signal handler: this process owns the signals.
func runScheduler(ctx context.Context, args []string) error {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, set := range opts.Flags.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, sched, err := schedulerapp.Setup(ctx, opts)
	if err != nil {
		return err
	}
	return schedulerapp.Run(ctx, cc, sched)
}
