package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/sqlite"
	"github.com/k3s-io/kine/pkg/server"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// startKine serves kine's etcd API for a SQLite database on a unix socket.
// Only the SQLite driver is linked (kine's endpoint package would pull in every
// driver, NATS server included), so the gRPC server is set up here the same way
// kine's endpoint.Listen does it.
func startKine(ctx context.Context, wg *sync.WaitGroup, f *files) (string, error) {
	logrus.SetLevel(logrus.WarnLevel)

	// Tuning values are kine's own command-line defaults (kine/pkg/app).
	_, backend, err := sqlite.New(ctx, wg, &drivers.Config{
		Scheme:         "sqlite",
		DataSourceName: f.sqliteDB + "?" + sqlite.DefaultParams,
		ConnectionPoolConfig: generic.ConnectionPoolConfig{
			MaxIdle:     20,
			MaxIdleTime: 2 * time.Minute,
		},
		CompactTimeout:   5 * time.Second,
		CompactMinRetain: 1000,
		CompactBatchSize: 1000,
		PollBatchSize:    500,
	})
	if err != nil {
		return "", err
	}
	if err := backend.Start(ctx); err != nil {
		return "", fmt.Errorf("starting kine backend: %w", err)
	}

	grpcServer := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.MaxRecvMsgSize(3*1024*1024),
		grpc.MaxSendMsgSize(64*1024*1024),
	)
	// Watch progress notifications every 5s and a recent emulated etcd version,
	// as kine's own defaults, so the API server's watch cache can use them.
	server.New(backend, "unix", 5*time.Second, "3.6.11").Register(grpcServer)

	if err := os.Remove(f.kineSocket); err != nil && !os.IsNotExist(err) {
		return "", err
	}
	listener, err := net.Listen("unix", f.kineSocket)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(f.kineSocket, 0o600); err != nil {
		listener.Close()
		return "", err
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := grpcServer.Serve(listener); err != nil {
			logrus.Errorf("kine gRPC server exited: %v", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		timer := time.AfterFunc(5*time.Second, grpcServer.Stop)
		defer timer.Stop()
		grpcServer.GracefulStop()
	}()
	return "unix://" + f.kineSocket, nil
}
