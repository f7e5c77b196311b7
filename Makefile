# NetSwap: the one front door. `make run` serves with the embedded defaults; `make test` installs what the tests
# need and runs them all; `make dist` builds the native executables; `make install` puts everything in place.

DOTNET  ?= dotnet
CONFIG  ?= Release
# /usr, as in the packages: the units, the inetd lines and the initramfs hook name /usr/sbin/netswapd and
# /usr/bin/netswap, so an install elsewhere would leave them pointing at nothing.
PREFIX  ?= /usr
DESTDIR ?=
RID     ?= linux-x64
ARGS    ?=

SBINDIR   = $(DESTDIR)$(PREFIX)/sbin
BINDIR    = $(DESTDIR)$(PREFIX)/bin
UNITDIR   = $(DESTDIR)/lib/systemd/system
SYSCONF   = $(DESTDIR)/etc

.PHONY: all build run test test-deps dist install install-server install-client deb bench e2e e2e-install certs fuzz soak stress clean

all: build

build:
	$(DOTNET) build NetSwap.slnx -c $(CONFIG)

## Build and run netswapd in the foreground with its embedded defaults (extra arguments: make run ARGS="...").
run:
	$(DOTNET) run --project src/netswapd -c $(CONFIG) -- $(ARGS)

test-deps:
	scripts/install-test-deps.sh

## Install every Debian package the tests need, then run every test; the last line is "N passed, N failed".
test: test-deps dist
	CONFIG=$(CONFIG) scripts/run-tests.sh

## Native AOT executables: dist/netswapd and dist/netswap (statically linked, runs in a bare initramfs).
## Linked with gcc even where clang is installed (native AOT prefers clang): the clang-linked static client came out
## 12 MB instead of 5, which a 32 MB client pays for in RAM when it boots from an initramfs.
LINKER  ?= gcc
## Rebuilt only when a source, project or build setting changed: `sudo make install` after `make dist` installs what
## was built instead of building again as root.
SOURCES := $(shell find src -name obj -prune -o -name bin -prune -o \( -name '*.cs' -o -name '*.csproj' \) -print) \
	Directory.Build.props Directory.Packages.props global.json
dist: dist/netswapd dist/netswap

dist/netswapd: $(SOURCES)
	$(DOTNET) publish src/netswapd -c Release -r $(RID) -p:PublishAot=true -p:CppCompilerAndLinker=$(LINKER) -o dist/.netswapd
	install -m 0755 dist/.netswapd/netswapd dist/netswapd
	rm -rf dist/.netswapd

# After the daemon, never beside it (make -j): both publish NetSwap.Protocol into the same obj directory.
dist/netswap: $(SOURCES) | dist/netswapd
	$(DOTNET) publish src/netswap -c Release -r $(RID) -p:PublishAot=true -p:StaticExecutable=true \
		-p:PositionIndependentExecutable=false -p:CppCompilerAndLinker=$(LINKER) -o dist/.netswap
	install -m 0755 dist/.netswap/netswap dist/netswap
	rm -rf dist/.netswap

DOCDIR    = $(DESTDIR)$(PREFIX)/share/doc/netswap
MANDIR    = $(DESTDIR)$(PREFIX)/share/man
COMPLETIONDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions

## Install what the two packages hold (server and client): executables, manual pages, systemd units, the
## initramfs-tools hook and script, the LTSP drop-in, the configuration files (an existing one is never overwritten;
## the shipped one is commented out and works as it is) and the inetd/xinetd/services/Avahi examples. Into the live
## system (no DESTDIR) it also adds the `netswap` system user and /var/lib/netswap (0700), as the package's postinst does.
install: install-server install-client

install-server: dist
	install -d $(SBINDIR) $(UNITDIR) $(SYSCONF)/netswap $(DOCDIR)/examples $(MANDIR)/man5 $(MANDIR)/man8 $(COMPLETIONDIR)
	install -m 0755 dist/netswapd $(SBINDIR)/netswapd
	install -m 0644 packaging/completion/netswapd $(COMPLETIONDIR)/netswapd
	install -m 0755 scripts/netswap-make-certs $(SBINDIR)/netswap-make-certs
	install -m 0644 packaging/systemd/netswapd.service packaging/systemd/netswapd.socket $(UNITDIR)/
	[ -e $(SYSCONF)/netswap/netswapd.toml ] || install -m 0644 packaging/netswapd.toml $(SYSCONF)/netswap/netswapd.toml
	install -m 0644 docs/man/netswapd.8 docs/man/netswap-make-certs.8 $(MANDIR)/man8/
	install -m 0644 docs/man/netswapd.toml.5 $(MANDIR)/man5/
	install -m 0644 packaging/inetd/inetd.conf packaging/inetd/xinetd.netswapd packaging/services $(DOCDIR)/examples/
	install -m 0644 README.md docs/*.md $(DOCDIR)/
	if [ -z "$(DESTDIR)" ]; then scripts/add-system-user; fi

install-client: dist
	install -d $(BINDIR) $(UNITDIR) $(SYSCONF)/netswap $(DOCDIR)/examples $(MANDIR)/man5 $(MANDIR)/man8 \
		$(DESTDIR)$(PREFIX)/share/initramfs-tools/hooks $(DESTDIR)$(PREFIX)/share/initramfs-tools/scripts/init-premount \
		$(DESTDIR)$(PREFIX)/share/ltsp/client/init $(COMPLETIONDIR)
	install -m 0755 dist/netswap $(BINDIR)/netswap
	install -m 0644 packaging/completion/netswap $(COMPLETIONDIR)/netswap
	install -m 0644 packaging/systemd/netswap-client.service $(UNITDIR)/
	install -m 0755 packaging/client/initramfs-hook $(DESTDIR)$(PREFIX)/share/initramfs-tools/hooks/netswap
	install -m 0755 packaging/client/initramfs-script $(DESTDIR)$(PREFIX)/share/initramfs-tools/scripts/init-premount/netswap
	install -m 0644 packaging/client/ltsp-56-netswap.sh $(DESTDIR)$(PREFIX)/share/ltsp/client/init/56-netswap.sh
	[ -e $(SYSCONF)/netswap/client.conf ] || install -m 0644 packaging/client/client.conf $(SYSCONF)/netswap/client.conf
	install -m 0644 packaging/avahi/netswap.service $(DOCDIR)/examples/avahi-netswap.service
	install -m 0644 docs/man/netswap.8 $(MANDIR)/man8/
	install -m 0644 docs/man/netswap-client.conf.5 $(MANDIR)/man5/

## The Debian packages: dist/netswapd_VERSION_ARCH.deb and dist/netswap-client_VERSION_ARCH.deb (dpkg-buildpackage
## -b -us -uc over debian/, then lintian). Needs debhelper, lintian and fakeroot (scripts/install-test-deps.sh).
deb: dist
	scripts/build-deb

## A small site's TLS credentials: make certs DIR=/etc/netswap/tls SERVER=swap.lan CLIENTS="pc01 pc02"
DIR     ?= tls
SERVER  ?= $(shell hostname -f 2>/dev/null || hostname)
CLIENTS ?= client
certs:
	scripts/netswap-make-certs $(DIR) --server-name $(SERVER) $(foreach c,$(CLIENTS),--client $(c))

## The end-to-end proof on a real kernel (QEMU guest, TCG); `make test` runs it too.
e2e: test-deps dist
	tests/e2e/run.sh basic

## The packages proven on Debian 12 systems under QEMU (docs/e2e.md): a server booted with systemd as PID 1 installs,
## runs and purges them; a small client boots an initramfs built by update-initramfs with the client package and
## swaps from the initramfs on. `make test` runs it too. PART=server|client|client-tls for one of them.
PART ?= all
e2e-install: test-deps deb
	tests/e2e-install/run.sh $(PART)

## An AFL++ campaign on a SharpFuzz target: make fuzz FUZZ_TARGET=connection|parsers FUZZ_SECONDS=600
FUZZ_TARGET  ?= connection
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh $(FUZZ_TARGET) $(FUZZ_SECONDS)

## The fault soak of issue 14: make soak SOAK_MINUTES=30 (root: it mounts a tmpfs). `make test` runs two minutes of it.
SOAK_MINUTES ?= 10
soak: test-deps dist
	/usr/bin/python3 tests/soak/soak.py --minutes $(SOAK_MINUTES) --daemon dist/netswapd

## The stall hunter of issue 14 run many times: make stress STRESS_RUNS=2000 STRESS_SECONDS=0.5 (each run: 2 or 8
## pipelining connections, 64 requests in flight, seeded mix, shadow model, 2 s watchdog; some over TLS).
STRESS_RUNS    ?= 1000
STRESS_SECONDS ?= 0.5
stress:
	$(DOTNET) build tests/NetSwap.Tests -c $(CONFIG)
	NETSWAP_STRESS_RUNS=$(STRESS_RUNS) NETSWAP_STRESS_SECONDS=$(STRESS_SECONDS) $(DOTNET) test tests/NetSwap.Tests -c $(CONFIG) \
		--no-build --filter "FullyQualifiedName~NetSwap.Tests.Server.StressTests"

## Side-by-side benchmark against nbdkit, nbd-server and qemu-nbd; writes docs/performance.md.
bench: dist
	bench/run.sh

clean:
	rm -rf dist artifacts
	find . -name bin -o -name obj | grep -E '/(bin|obj)$$' | xargs rm -rf
