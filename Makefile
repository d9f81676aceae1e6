# libimg top-level Makefile.
# Honours CC CFLAGS CPPFLAGS LDFLAGS prefix DESTDIR bashcompdir; quiet unless V=1.
# Targets: all check install asan ubsan fuzz fuzz-run bench demo clean deps
#          test-install check-crash tsan lib tools tests tool-links
#          asan-build tsan-build clang-build fuzz-corpus

CC       ?= cc
CFLAGS   ?= -O2 -g
prefix   ?= /usr/local
bindir   ?= $(prefix)/bin
libdir   ?= $(prefix)/lib
includedir ?= $(prefix)/include
mandir   ?= $(prefix)/share/man
datadir  ?= $(prefix)/share
# bash-completion's directory under $(datadir) (its pkg-config file names it
# relative to datadir), else the usual place there.
bashcompdir ?= $(or $(shell pkg-config --define-variable=datadir=$(datadir) \
                 --variable=completionsdir bash-completion 2>/dev/null),$(datadir)/bash-completion/completions)
BUILD    ?= build

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wundef -Wpointer-arith \
            -Wmissing-prototypes -Wno-unused-parameter -Werror
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -fPIC \
            -fvisibility=hidden -pthread -Ilibimg/include -Ilibimg $(WARN)
EXTRA_CFLAGS ?=
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS) $(EXTRA_CFLAGS) $(CPPFLAGS)
# libblkid and libext2fs for libimg/fs.c (filesystems inside images), liburing
# for libimg/io_uring.c.
FS_PKGS  := blkid ext2fs com_err liburing
FS_CFLAGS := $(shell pkg-config --cflags $(FS_PKGS) 2>/dev/null || echo -I/usr/include/blkid)
FS_LIBS  := $(shell pkg-config --libs $(FS_PKGS) 2>/dev/null || echo -lblkid -lext2fs -lcom_err -luring)
BASE_CFLAGS += $(FS_CFLAGS)
LZ4_LIBS := $(shell pkg-config --libs liblz4 2>/dev/null || echo -llz4)
LZ4_CFLAGS := $(shell pkg-config --cflags liblz4 2>/dev/null)
BASE_CFLAGS += $(LZ4_CFLAGS)
LIBS     := -pthread $(FS_LIBS) $(LZ4_LIBS)
# imgserve: libfuse3 (low-level API).
CFLAGS_imgserve := $(shell pkg-config --cflags fuse3 2>/dev/null || echo -I/usr/include/fuse3)
LIBS_imgserve   := $(shell pkg-config --libs fuse3 2>/dev/null || echo -lfuse3)
SOVERSION := 0
# The version has one source, libimg/include/libimg.h (LIBIMG_VERSION_MAJOR,
# _MINOR, _PATCH); scripts/version.sh reads it for the Makefile (library file
# name, libimg.pc) and the tests.  The man pages say "libimg @VERSION@" in
# their .TH line, substituted by make install.
VERSION  := $(shell scripts/version.sh)

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRCS  := $(sort $(wildcard libimg/*.c))
LIB_OBJS  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
STATIC    := $(BUILD)/lib/libimg.a
SHARED    := $(BUILD)/lib/libimg.so.$(VERSION)

# Each tools/NAME.c but tools/common*.c is a program; the shared code is
# tools/common*.c and tools/online/*.c (the online tools: run directory,
# control protocol, loop devices, daemon start, mounted and offline
# filesystems).  A tool needing extra libraries sets LIBS_NAME (see below).
TOOL_COMMON_SRCS := $(sort $(wildcard tools/common*.c tools/online/*.c))
TOOL_SRCS := $(filter-out $(TOOL_COMMON_SRCS),$(sort $(wildcard tools/*.c)))
TOOLS     := $(patsubst tools/%.c,$(BUILD)/bin/%,$(TOOL_SRCS))
TOOL_COMMON := $(patsubst %.c,$(BUILD)/obj/%.o,$(TOOL_COMMON_SRCS))

# What each tool links of the shared code, besides tools/common.c (which
# every tool links): a tool not named here links tools/common.c alone.  On
# a line an object needs only objects after it: online/fs_offline needs
# online/daemon, which needs online/loop, online/control, online/rundir;
# online/mount and online/fs_offline need common_fs; online/control needs
# tools/common.c alone; online/qos needs online/control.  tests/cli/build.bats checks the binaries against
# this table (make tool-links prints it).
ONLINE_CLIENT := online/control online/rundir
ONLINE_DAEMON := online/daemon online/loop $(ONLINE_CLIENT)
TOOL_USES_compact   := online/mount $(ONLINE_CLIENT) common_fs
TOOL_USES_growimg   := online/fs_offline online/mount $(ONLINE_DAEMON) common_fs
TOOL_USES_imgattach := online/qos $(ONLINE_DAEMON)
TOOL_USES_imgctl    := online/qos online/mount online/loop $(ONLINE_CLIENT) common_fs
TOOL_USES_imgdetach := $(ONLINE_DAEMON)
TOOL_USES_imginfo   := online/rundir common_fs
TOOL_USES_imgmount  := online/mount online/qos $(ONLINE_DAEMON) common_fs
TOOL_USES_imgserve  := online/qos online/watch online/events $(ONLINE_CLIENT) common_cache
TOOL_USES_imgsnap   := $(ONLINE_CLIENT)
TOOL_USES_imgumount := $(ONLINE_DAEMON)
TOOL_USES_mkimg     := online/fs_offline $(ONLINE_DAEMON) common_fs
TOOL_USES_shrinkimg := online/fs_offline online/mount $(ONLINE_DAEMON) common_fs
# $(call tool_objs,NAME): the objects of the shared code NAME links.
tool_objs = $(patsubst %,$(BUILD)/obj/tools/%.o,$(TOOL_USES_$(1)) common)

TEST_HELPERS := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/helpers/*.c))
# The tools again, for tests/cli/faults.bats: linked with the test hook that
# arms LIBIMG_FAULT (tests/faultbin/fault_on.c, tests/helpers/fault_env.c).
# The library and the tools of $(BUILD)/bin (what make install installs)
# have no such hook and ignore the variable.
FAULT_TOOLS := $(patsubst tools/%.c,$(BUILD)/faultbin/%,$(TOOL_SRCS))
FAULT_HOOK := $(BUILD)/obj/tests/faultbin/fault_on.o $(BUILD)/obj/tests/helpers/fault_env.o
FAULT_SO := $(BUILD)/faultbin/libimg.so
UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
CRASH_SRCS := $(sort $(wildcard tests/crash/*.c))
CRASH_BINS := $(patsubst tests/crash/%.c,$(BUILD)/tests/crash/%,$(CRASH_SRCS))
# tools_fuzzer needs tools/common.c (parse_size): built only once it exists.
FUZZ_SRCS := $(sort $(filter-out $(if $(wildcard tools/common.c),,fuzz/tools_fuzzer.c),\
               $(wildcard fuzz/*_fuzzer.c)))
FUZZ_REPLAY := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

DEPS_STAMP := $(BUILD)/.deps-ok
# The dependency step every compile waits for (an order-only prerequisite).
# make install never installs packages: with install among the goals, a tree
# built before (DEPS_STAMP there) needs no step, and a fresh one only checks
# the packages the build needs (deps.sh --check build names the missing ones
# and fails) -- never apt-get.
BUILD_DEPS_STAMP := $(BUILD)/.build-deps-ok
ifeq ($(filter install,$(MAKECMDGOALS)),)
DEPS_STEP := $(DEPS_STAMP)
else
DEPS_STEP := $(if $(wildcard $(DEPS_STAMP)),,$(BUILD_DEPS_STAMP))
endif

# Objects of programs (tools, tests, fuzz replayers, benchmarks) are reached
# only through the pattern rules $(BUILD)/bin/% and the like, so Make would
# take them for intermediate files and delete them after the build (and then
# relink every program on the next make): they are kept (.SECONDARY), and
# only they.  .SECONDARY without prerequisites made every target
# intermediate, the dependency stamp too, which Make then ran late.
PROG_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TOOL_SRCS) $(UNIT_SRCS) \
               $(CRASH_SRCS) $(FUZZ_SRCS) $(BENCH_SRCS))
.SECONDARY: $(PROG_OBJS) $(FAULT_HOOK)

.PHONY: asan-build tsan-build clang-build tool-links
.PHONY: all lib tools tests check check-crash install test-install asan ubsan \
        fuzz fuzz-run fuzz-corpus bench demo clean deps tsan

all: $(DEPS_STAMP) lib tools tests

# Every compile waits for the dependency step (an order-only prerequisite:
# a fresh machine installs the headers before the first object is built).
deps:
	$(Q)scripts/deps.sh
$(DEPS_STAMP): scripts/deps.sh
	$(Q)scripts/deps.sh
	$(Q)mkdir -p $(BUILD) && touch $(DEPS_STAMP)
$(BUILD_DEPS_STAMP): scripts/deps.sh
	$(Q)scripts/deps.sh --check build
	$(Q)mkdir -p $(BUILD) && touch $(BUILD_DEPS_STAMP)

lib: $(STATIC) $(SHARED) $(BUILD)/lib/libimg.pc
tools: $(TOOLS)
tests: $(UNIT_BINS) $(CRASH_BINS) $(FUZZ_REPLAY) $(BENCH_BINS) $(FAULT_TOOLS) $(FAULT_SO)

$(BUILD)/obj/%.o: %.c | $(DEPS_STEP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(CFLAGS_$(notdir $*)) -MMD -MP -c -o $@ $<

$(STATIC): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJS) libimg/libimg.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libimg.so.$(SOVERSION) \
		-Wl,--version-script=libimg/libimg.map -Wl,-z,defs -o $@ $(LIB_OBJS) $(LIBS)
	$(Q)ln -sf libimg.so.$(VERSION) $(BUILD)/lib/libimg.so.$(SOVERSION)
	$(Q)ln -sf libimg.so.$(SOVERSION) $(BUILD)/lib/libimg.so

$(BUILD)/lib/libimg.pc: libimg/libimg.pc.in libimg/include/libimg.h
	@mkdir -p $(dir $@)
	$(Q)sed -e 's|@prefix@|$(prefix)|' -e 's|@libdir@|$(libdir)|' \
		-e 's|@includedir@|$(includedir)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# A tool links its own object, the shared objects tool_objs names, the library.
$(foreach t,$(notdir $(TOOLS)),$(eval $(BUILD)/bin/$(t): $(call tool_objs,$(t))))
$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(call tool_objs,$*) $(STATIC) $(LIBS_$*) $(LIBS)

# The table above, one line per tool: "NAME: OBJECT...".
tool-links:
	@$(foreach t,$(notdir $(TOOLS)),echo "$(t): $(TOOL_USES_$(t)) common";)

$(BUILD)/faultbin/%: $(BUILD)/obj/tools/%.o $(FAULT_HOOK) $(TOOL_COMMON) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(FAULT_HOOK) $(TOOL_COMMON) $(STATIC) $(LIBS_$*) $(LIBS)

# The shared library with the same hook, for the tests that call libimg.so
# from python (tests/cli/handle_rules.bats): never installed.
$(FAULT_SO): $(LIB_OBJS) $(FAULT_HOOK) libimg/libimg.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libimg.so.$(SOVERSION) \
		-Wl,--version-script=libimg/libimg.map -Wl,-z,defs -o $@ $(LIB_OBJS) $(FAULT_HOOK) $(LIBS)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TEST_HELPERS) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HELPERS) $(STATIC) $(LIBS)

# Unit test of the control protocol (tools/online/control.c) links it.
TOOL_USES_online_reply := online/control
$(BUILD)/tests/unit/online_reply: $(BUILD)/obj/tests/unit/online_reply.o $(TEST_HELPERS) $(call tool_objs,online_reply) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HELPERS) $(call tool_objs,online_reply) $(STATIC) $(LIBS)

# Unit test of the QoS token buckets (tools/online/qos.c) links them.
TOOL_USES_qos := online/qos online/control
$(BUILD)/tests/unit/qos: $(BUILD)/obj/tests/unit/qos.o $(TEST_HELPERS) $(call tool_objs,qos) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HELPERS) $(call tool_objs,qos) $(STATIC) $(LIBS)

$(BUILD)/tests/crash/%: $(BUILD)/obj/tests/crash/%.o $(TEST_HELPERS) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HELPERS) $(STATIC) $(LIBS)

# Fuzz harnesses built as standalone corpus replayers (no libFuzzer needed).
$(BUILD)/fuzz/%: $(BUILD)/obj/fuzz/%.o $(BUILD)/obj/fuzz/replay_main.o $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/obj/fuzz/replay_main.o $(STATIC) $(LIBS)

# tools_fuzzer: parse_size (tools/common.c) and the control protocol's
# reply parser (tools/online/control.c); fuzz/build.sh links the same.
TOOL_USES_tools_fuzzer := online/control
$(BUILD)/fuzz/tools_fuzzer: $(BUILD)/obj/fuzz/tools_fuzzer.o $(BUILD)/obj/fuzz/replay_main.o $(call tool_objs,tools_fuzzer) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/obj/fuzz/replay_main.o $(call tool_objs,tools_fuzzer) $(STATIC) $(LIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(STATIC) $(LIBS)

# Everything: the normal build's suites plus the sanitizer builds' unit,
# crash and fuzz-replay tests, summed in one closing line.
check: all asan-build tsan-build clang-build
	$(Q)BUILD=$(BUILD) tests/run.sh unit crash fuzz install cli online asan tsan

check-crash: all
	$(Q)BUILD=$(BUILD) CRASH_FULL=1 tests/run.sh crash

# Sanitizer builds of the library, unit, crash and fuzz-replay tests.
asan-build: $(DEPS_STAMP)
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan \
		EXTRA_CFLAGS="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
		LDFLAGS="$(LDFLAGS) -fsanitize=address,undefined" lib tools tests
asan: asan-build
	$(Q)tests/run.sh asan

ubsan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-ubsan \
		EXTRA_CFLAGS="-O1 -fsanitize=undefined -fno-sanitize-recover=all" \
		LDFLAGS="$(LDFLAGS) -fsanitize=undefined" lib tests
	$(Q)BUILD=build-ubsan tests/run.sh unit crash fuzz

# The library and tools must also build warning-free with clang.
clang-build: $(DEPS_STAMP)
	$(Q)$(MAKE) --no-print-directory BUILD=build-clang CC=clang lib tools

# ThreadSanitizer build of the multi-threaded test (clang).
tsan-build: build-tsan/threads
build-tsan/threads: $(LIB_SRCS) tests/unit/threads.c $(wildcard libimg/*.h libimg/include/*.h) | $(DEPS_STAMP)
	$(Q)mkdir -p build-tsan
	$(Q)clang -std=c11 -D_GNU_SOURCE -fsanitize=thread -g -O1 -Ilibimg/include -Ilibimg \
		$(FS_CFLAGS) $(LIB_SRCS) tests/unit/threads.c $(LIBS) -o $@
tsan: tsan-build
	$(Q)tests/run.sh tsan

FUZZ_SECONDS ?= 60
fuzz: $(DEPS_STAMP)
	$(Q)fuzz/build.sh
fuzz-run: fuzz
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh
# Regenerate the seed corpus (fuzz/gen_corpus.c) into fuzz/corpus/.
fuzz-corpus: fuzz
	$(Q)fuzz/gen_corpus.sh

bench: all
	$(Q)BUILD=$(BUILD) bench/run.sh

demo: all
	$(Q)BUILD=$(BUILD) scripts/demo.sh

# The bash completion (completion/libimg.bash) serves every tool: it is
# installed once and linked under each tool's name, the name bash-completion
# loads it by.  install needs only the built files (lib tools), not the
# dependency step of all (see DEPS_STEP): it never installs packages.
install: lib tools
	install -d $(DESTDIR)$(bindir) $(DESTDIR)$(libdir)/pkgconfig \
		$(DESTDIR)$(includedir) $(DESTDIR)$(mandir)/man1 $(DESTDIR)$(mandir)/man7
	$(if $(TOOLS),install -m 755 $(TOOLS) $(DESTDIR)$(bindir)/)
	install -m 644 $(STATIC) $(DESTDIR)$(libdir)/
	install -m 755 $(SHARED) $(DESTDIR)$(libdir)/
	ln -sf libimg.so.$(VERSION) $(DESTDIR)$(libdir)/libimg.so.$(SOVERSION)
	ln -sf libimg.so.$(SOVERSION) $(DESTDIR)$(libdir)/libimg.so
	install -m 644 libimg/include/libimg.h $(DESTDIR)$(includedir)/
	sed -e 's|@prefix@|$(prefix)|' -e 's|@libdir@|$(libdir)|' \
		-e 's|@includedir@|$(includedir)|' -e 's|@VERSION@|$(VERSION)|' \
		libimg/libimg.pc.in > $(DESTDIR)$(libdir)/pkgconfig/libimg.pc
	$(foreach m,$(wildcard man/*.[17]),sed '/^\.TH /s/@VERSION@/$(VERSION)/' $(m) \
		> $(DESTDIR)$(mandir)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)) && \
		chmod 644 $(DESTDIR)$(mandir)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)) &&) true
	install -d $(DESTDIR)$(bashcompdir)
	install -m 644 completion/libimg.bash $(DESTDIR)$(bashcompdir)/mkimg
	$(foreach t,$(filter-out mkimg,$(notdir $(TOOLS))),ln -sf mkimg $(DESTDIR)$(bashcompdir)/$(t) &&) true
	install -d $(DESTDIR)$(datadir)/libimg/schema
	install -m 644 $(wildcard tools/schema/*.json) $(DESTDIR)$(datadir)/libimg/schema/

# Build a tiny program against an installed copy through pkg-config.
test-install: all
	$(Q)BUILD=$(BUILD) scripts/test-install.sh

clean:
	rm -rf build build-asan build-ubsan build-fuzz build-tsan build-clang

# Header dependencies: each compile writes its .d (-MMD -MP) beside the
# object, naming the headers it included; they are read here (last, so
# that their targets do not become the default goal), so touching a
# header rebuilds only the objects that include it.
-include $(wildcard $(BUILD)/obj/*/*.d $(BUILD)/obj/*/*/*.d)
# An object without its .d (built by an older Makefile) depends on every
# header, once: its next compile writes the .d.
ALL_OBJS := $(LIB_OBJS) $(TOOL_COMMON) $(TEST_HELPERS) $(PROG_OBJS) $(FAULT_HOOK) \
	$(BUILD)/obj/fuzz/replay_main.o
$(foreach o,$(ALL_OBJS),$(if $(wildcard $(o:.o=.d)),,$(o))): \
	$(wildcard libimg/*.h libimg/include/*.h tools/*.h tools/online/*.h tests/helpers/*.h fuzz/*.h)
