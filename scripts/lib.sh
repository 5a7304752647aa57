# Shell helpers shared by scripts/ and bench/ (source it; not run alone).

# True when something accepts connections on 127.0.0.1:PORT.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port the kernel says is free now (a small race before it is bound).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [PID]: waits up to 5 s for PORT to answer; fails loudly,
# and at once if process PID (the server being waited for) has died.
wait_port() {
    for _ in $(seq 100); do
        answers "$1" && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            echo "the server for port $1 (pid $2) exited before listening" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1 after 5 s" >&2
    return 1
}
