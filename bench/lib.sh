# bench/lib.sh — shell functions shared by bench/intake and bench/relay. Source it; not a program.
#
# The caller sets, before using the functions:
#   BENCH_NAME      short name for messages ("intake", "relay")
#   ROOT            the repository root
#   TMP             the run's temp dir (bench_mktemp sets it)
#   KEEP_TMP        1 to keep TMP at exit
#   SOURCE_FLAGS    smtp-source flags (array), SOURCE_TIMEOUT (s), BANNER_TIMEOUT (s)   [run_source]
#   PF_EXTRA        extra main.cf lines NAME=VALUE (array, may be empty)           [start_postfix]
#   BUILD_DIR, DO_BUILD                                                              [build_mailbridge]
# The functions keep their own state in: PIDS (our background children), PF_CONF and
# PF_MASTER_PID (the private Postfix), USED_PORTS/FREE_PORT, SINK_PID, SRC_T0/SRC_SECS, MB_STATUS.
# bench_cleanup stops all of it and removes TMP; install it with `trap bench_cleanup EXIT`, or call
# it from the script's own EXIT trap.

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
PIDS=()
PF_CONF=""
PF_MASTER_PID=""
USED_PORTS=""
BENCH_CLEANUP_HOOKS=()   # functions run first by bench_cleanup (stop what the script started)

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
now() { date +%s.%N; }

# ---------------------------------------------------------------------------------------
# Postfix (smtp-source, smtp-sink and the reference MTA).
# ---------------------------------------------------------------------------------------
bench_install_postfix() { # installs postfix if missing; sets POSTFIX_VERSION
	if [ "$(dpkg-query -W -f='${Status}' postfix 2>/dev/null || true)" != "install ok installed" ] ||
		[ ! -x "$SMTP_SOURCE" ] || [ ! -x "$SMTP_SINK" ]; then
		log "installing postfix (for smtp-source/smtp-sink and the reference MTA)"
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		# "No configuration" = no /etc/postfix/main.cf, so the system Postfix cannot start; we never
		# start or touch it (our instance lives in its own config_directory under $TMP).
		DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >&2 ||
			{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >&2; }
	fi
	POSTFIX_VERSION=$(/usr/sbin/postconf -d -h mail_version 2>/dev/null || echo unknown)
}

# ---------------------------------------------------------------------------------------
# Temp dir, process bookkeeping, cleanup.
# ---------------------------------------------------------------------------------------
bench_mktemp() { # bench_mktemp PREFIX: sets TMP
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	chmod 755 "$TMP"   # Postfix daemons (user postfix) must traverse it
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

forget_pid() { # drop a reaped child from PIDS so cleanup never signals a reused PID
	local p keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

stop_pid() { # stop_pid PID [grace seconds] [signal]: signal (TERM), wait, SIGKILL; PID is our child
	local pid=$1 grace=${2:-5} sig=${3:-TERM} i
	if pid_alive "$pid" && kill "-$sig" "$pid" 2>/dev/null; then
		for ((i = 0; i < grace * 10; i++)); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		if pid_alive "$pid"; then
			log "pid $pid did not exit after ${grace}s, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
}

stop_postfix() {
	[ -n "$PF_CONF" ] || return 0
	local i pid qdir
	qdir=$(/usr/sbin/postconf -c "$PF_CONF" -h queue_directory 2>/dev/null || true)
	/usr/sbin/postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
	if [ -n "$PF_MASTER_PID" ]; then
		for ((i = 0; i < 100; i++)); do pid_alive "$PF_MASTER_PID" || break; sleep 0.1; done
		if pid_alive "$PF_MASTER_PID"; then
			log "postfix master $PF_MASTER_PID still running, killing it"
			kill -KILL "$PF_MASTER_PID" 2>/dev/null || true
		fi
	fi
	# Any Postfix daemon of this instance left behind has its cwd in our queue directory.
	for ((i = 0; i < 30 && ${#qdir} > 0; i++)); do
		local left=()
		for pid in /proc/[0-9]*; do
			[ "$(readlink "$pid/cwd" 2>/dev/null)" = "$qdir" ] && left+=("${pid#/proc/}")
		done
		[ ${#left[@]} -eq 0 ] && break
		if [ "$i" -eq 20 ]; then kill -KILL "${left[@]}" 2>/dev/null || true; fi
		sleep 0.1
	done
	PF_CONF=""
	PF_MASTER_PID=""
}

bench_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	local h p
	for h in "${BENCH_CLEANUP_HOOKS[@]}"; do "$h"; done
	stop_postfix
	for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
	if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
		if [ "${KEEP_TMP:-0}" -eq 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
	fi
	exit "$rc"
}

# ---------------------------------------------------------------------------------------
# Ports and listeners.
# ---------------------------------------------------------------------------------------
# Below the kernel's ephemeral range (32768-60999 by default), so that the outgoing connections
# of smtp-source, mailbridge and Postfix cannot take the port between this check and the bind.
free_port() { # sets FREE_PORT to a currently unused loopback TCP port (not in a subshell!)
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		case " $USED_PORTS " in *" $p "*) continue ;; esac
		if ! ss -Htan "sport = :$p" 2>/dev/null | grep -q .; then
			USED_PORTS="$USED_PORTS $p"
			FREE_PORT=$p
			return 0
		fi
	done
	echo "bench/$BENCH_NAME: no free port found" >&2
	return 1
}

wait_banner() { # wait_banner PORT TIMEOUT [PID]: until 127.0.0.1:PORT says "220"
	local port=$1 timeout=$2 pid=${3:-} deadline line
	deadline=$(($(date +%s) + timeout))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if [ -n "$pid" ] && ! pid_alive "$pid"; then return 1; fi
		if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
			line=""
			IFS= read -r -t 2 line <&3 || true
			printf 'QUIT\r\n' >&3 2>/dev/null || true
			exec 3>&- 3<&- || true
			case "$line" in 220*) return 0 ;; esac
		fi
		sleep 0.1
	done
	return 1
}

# run_source NAME PORT: runs smtp-source SOURCE_FLAGS against 127.0.0.1:PORT; sets SRC_T0 (start,
# epoch seconds) and SRC_SECS (wall time until it had 250 for every message).
run_source() {
	local name=$1 port=$2 t0 t1 rc=0
	log "$name: smtp-source ${SOURCE_FLAGS[*]} 127.0.0.1:$port"
	# In the background + `wait`, so that Ctrl-C reaches our trap at once (a foreground
	# child would be waited for first). --foreground: timeout stays in our process group;
	# it forwards SIGTERM from cleanup to smtp-source.
	t0=$(now)
	timeout --foreground "$SOURCE_TIMEOUT" "$SMTP_SOURCE" "${SOURCE_FLAGS[@]}" "127.0.0.1:$port" \
		>"$TMP/source-$name.out" 2>&1 </dev/null &
	local spid=$!
	PIDS+=("$spid")
	wait "$spid" || rc=$?
	t1=$(now)
	forget_pid "$spid"
	SRC_T0=$t0
	SRC_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	# timeout forwards Ctrl-C to smtp-source and exits 130; bash then treats the SIGINT as
	# handled by the child and does not run our trap, so act on it here.
	case "$rc" in 130 | 143) log "interrupted"; exit 130 ;; esac
	if [ "$rc" -ne 0 ]; then
		log "$name: smtp-source failed (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${SOURCE_TIMEOUT}s")):"
		tail -n 5 "$TMP/source-$name.out" | sed 's/^/    /' >&2
		return 1
	fi
	return 0
}

start_sink() { # start_sink PORT [extra smtp-sink args]: sets SINK_PID
	local port=$1; shift
	"$SMTP_SINK" -u postfix "$@" "127.0.0.1:$port" 1024 >"$TMP/sink-$port.out" 2>&1 &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
	if ! wait_banner "$port" "$BANNER_TIMEOUT" "$SINK_PID"; then
		log "smtp-sink on port $port did not come up:"
		sed 's/^/    /' "$TMP/sink-$port.out" >&2
		return 1
	fi
}

# start_postfix DIR SMTPPORT RELAYPORT: a private, throwaway Postfix in DIR (config, queue, data,
# maillog DIR/maillog): smtpd on 127.0.0.1:SMTPPORT, relaying everything to [127.0.0.1]:RELAYPORT.
# Sets PF_CONF and PF_MASTER_PID; stop it with stop_postfix.
start_postfix() {
	local d=$1 smtpport=$2 relayport=$3 i kv
	mkdir -p "$d/etc" "$d/queue" "$d/data"
	chown postfix:postfix "$d/data"
	cat >"$d/etc/main.cf" <<EOF
# Private benchmark instance written by bench/$BENCH_NAME; removed at the end of the run.
compatibility_level = 3.6
config_directory = $d/etc
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
relay_domains =
relayhost = [127.0.0.1]:$relayport
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtpd_tls_security_level = none
smtp_tls_security_level = none
message_size_limit = 36700160
biff = no
append_dot_mydomain = no
maillog_file = $d/maillog
maillog_file_prefixes = $d
EOF
	for kv in "${PF_EXTRA[@]}"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}" >>"$d/etc/main.cf"; done
	cat >"$d/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$smtpport inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	PF_CONF="$d/etc"
	if ! /usr/sbin/postfix -c "$d/etc" start >"$TMP/postfix-start.out" 2>&1; then
		log "postfix: 'postfix -c $d/etc start' failed:"
		sed 's/^/    /' "$TMP/postfix-start.out" >&2
		[ -f "$d/maillog" ] && tail -n 10 "$d/maillog" | sed 's/^/    /' >&2
		return 1
	fi
	for ((i = 0; i < 100; i++)); do
		[ -s "$d/queue/pid/master.pid" ] && break
		sleep 0.1
	done
	PF_MASTER_PID=$(tr -d ' \n' <"$d/queue/pid/master.pid" 2>/dev/null || true)
	if ! wait_banner "$smtpport" "$BANNER_TIMEOUT"; then
		log "postfix: smtpd on 127.0.0.1:$smtpport did not answer 220 within ${BANNER_TIMEOUT}s"
		[ -f "$d/maillog" ] && tail -n 10 "$d/maillog" | sed 's/^/    /' >&2
		return 1
	fi
}

# ---------------------------------------------------------------------------------------
# mailbridge binary.
# ---------------------------------------------------------------------------------------
build_mailbridge() { # builds BUILD_DIR/mailbridge if DO_BUILD=1; on failure sets MB_STATUS, returns 1
	local bin="$BUILD_DIR/mailbridge"
	if [ "$DO_BUILD" -eq 1 ]; then
		log "mailbridge: building in $BUILD_DIR (RelWithDebInfo, -j2)"
		if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
			if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$TMP/cmake.log" 2>&1; then
				MB_STATUS="cmake configure failed"
				tail -n 20 "$TMP/cmake.log" | sed 's/^/    /' >&2
				return 1
			fi
		fi
		# Only the binary: a broken unit test must not block the benchmark.
		if ! cmake --build "$BUILD_DIR" -j2 --target mailbridge >"$TMP/build.log" 2>&1; then
			MB_STATUS="build failed"
			grep -E 'error:|undefined reference|Error [0-9]' "$TMP/build.log" | head -n 15 | sed 's/^/    /' >&2
			return 1
		fi
	fi
	if [ ! -x "$bin" ]; then
		MB_STATUS="no binary at $bin"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------
# JSON output.
# ---------------------------------------------------------------------------------------
jnum() { [ -n "$1" ] && printf '%s' "$1" || printf 'null'; }
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
