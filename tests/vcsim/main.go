// Command vcsim serves govmomi's vCenter simulator (github.com/vmware/govmomi/simulator) on
// 127.0.0.1 for the tests. It prints one line of JSON (url, username, password, vms, ...) on stdout
// when it is ready, then serves until SIGINT or SIGTERM.
//
// The simulator comes from Debian's golang-github-vmware-govmomi-dev; build with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o tests/vcsim/vcsim ./tests/vcsim
//
// Flags shape the inventory and inject faults (VM names are the simulator's, after -rename):
//
//	-username/-password   only this login is accepted (default: any non-empty user and password)
//	-tls                  https with a fresh self-signed certificate, its PEM in the JSON line (default: http)
//	-rename OLD=NEW,...   rename virtual machines
//	-tools-running VM,... VMware Tools reported running (quiesced snapshots)
//	-fail-snapshot VM,... CreateSnapshot_Task returns a task that ends in error (quiesce failure)
//	-hang-snapshot VM,... CreateSnapshot_Task returns a task that stays running
//	-disable-snapshot VM,... CreateSnapshot_Task is a disabled method (MethodDisabled fault)
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const quiesceError = "An error occurred while taking a snapshot: Failed to quiesce the virtual machine."

// failingVM: every snapshot task ends in error, as vCenter reports a quiesce failure.
type failingVM struct{ simulator.VirtualMachine }

func (vm *failingVM) CreateSnapshotTask(req *types.CreateSnapshot_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.ApplicationQuiesceFault{}
	})
	ref := task.Run()
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.error", Val: types.LocalizedMethodFault{Fault: &types.ApplicationQuiesceFault{}, LocalizedMessage: quiesceError}},
	})
	return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: ref}}
}

// hangingVM: every snapshot task stays running (a stuck snapshot), for deadlines.
type hangingVM struct{ simulator.VirtualMachine }

func (vm *hangingVM) CreateSnapshotTask(req *types.CreateSnapshot_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "createSnapshot", nil)
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.startTime", Val: time.Now()},
		{Name: "info.state", Val: types.TaskInfoStateRunning},
	})
	return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: task.Self}}
}

// certificate: a fresh self-signed ECDSA certificate for 127.0.0.1, ::1 and localhost (the simulator's
// built-in one is RSA-1024, which OpenSSL refuses as too weak), and its PEM for the clients to trust.
func certificate() (tls.Certificate, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fatal("generating a key: %v", err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		fatal("creating a certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func list(value string) []string {
	var out []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

var cleanup = func() {}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	cleanup()
	os.Exit(2)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	username := flag.String("username", "", "the only user name accepted (with -password)")
	password := flag.String("password", "", "the only password accepted (with -username)")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	rename := flag.String("rename", "", "OLD=NEW,... virtual machines to rename")
	toolsRunning := flag.String("tools-running", "", "VM,... with VMware Tools running")
	failSnapshot := flag.String("fail-snapshot", "", "VM,... whose snapshot tasks fail")
	hangSnapshot := flag.String("hang-snapshot", "", "VM,... whose snapshot tasks never finish")
	disableSnapshot := flag.String("disable-snapshot", "", "VM,... where CreateSnapshot_Task is disabled")
	flag.Parse()
	if (*username == "") != (*password == "") {
		fatal("-username and -password go together")
	}

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		fatal("creating the inventory: %v", err)
	}
	cleanup = model.Remove // the datastores' temporary directories
	defer model.Remove()

	vms := map[string]*simulator.VirtualMachine{}
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		vms[vm.Name] = vm
	}
	lookup := func(name string) *simulator.VirtualMachine {
		vm, ok := vms[name]
		if !ok {
			fatal("no virtual machine named %q", name)
		}
		return vm
	}
	for _, pair := range list(*rename) {
		parts := strings.SplitN(pair, "=", 2)
		if len(parts) != 2 || parts[1] == "" {
			fatal("-rename wants OLD=NEW, not %q", pair)
		}
		vm := lookup(parts[0])
		delete(vms, parts[0])
		vm.Name, vm.Config.Name, vm.Summary.Config.Name = parts[1], parts[1], parts[1]
		vms[parts[1]] = vm
	}
	for _, name := range list(*toolsRunning) {
		vm := lookup(name)
		vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
	}
	for _, name := range list(*disableSnapshot) {
		vm := lookup(name)
		vm.DisabledMethod = append(vm.DisabledMethod, "CreateSnapshot_Task", "CreateSnapshotTask")
	}
	for _, name := range list(*failSnapshot) {
		simulator.Map.Put(&failingVM{*lookup(name)})
	}
	for _, name := range list(*hangSnapshot) {
		simulator.Map.Put(&hangingVM{*lookup(name)})
	}

	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	certPEM := ""
	if *useTLS {
		var cert tls.Certificate
		cert, certPEM = certificate()
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()

	user := server.URL.User.Username()
	pass, _ := server.URL.User.Password()
	endpoint := *server.URL
	endpoint.User = nil
	names := make([]string, 0, len(vms))
	for name := range vms {
		names = append(names, name)
	}
	sort.Strings(names)
	ready, _ := json.Marshal(map[string]interface{}{
		"url":      endpoint.String(),
		"username": user,
		"password": pass,
		// without -username/-password the simulator accepts any non-empty user and password
		"any_login":   *username == "",
		"vms":         names,
		"pid":         os.Getpid(),
		"certificate": certPEM, // PEM of the self-signed certificate with -tls, else empty
	})
	fmt.Println(string(ready))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
