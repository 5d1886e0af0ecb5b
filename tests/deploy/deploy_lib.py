"""What the deploy/ tests share: reading the daemons' configs the way the daemons do, addresses,
and collecting every problem before failing.

A config is always validated by the binary that a unit, manifest or compose file runs it with
(`--print_config` loads, validates and prints the effective config, docs/config.md), and the
ports, paths and sockets the tests compare come from that effective config, defaults filled in.
"""
import argparse
import os
import re
import subprocess
import sys

# The config message each daemon reads (proto/fleetpmu/v1/config.proto).
DAEMONS = {"fleetpmu-server": "server", "fleetpmu-agent": "agent", "fleetpmu-shim": "shim"}


class Problems:
    """Collects failures so that one run names all of them; exit status 1 if there was one."""

    def __init__(self, name):
        self.name = name
        self.failed = []
        self.passed = 0

    def check(self, ok, message):
        if ok:
            self.passed += 1
        else:
            self.failed.append(message)
            print(f"FAIL: {message}", flush=True)
        return ok

    def fail(self, message):
        return self.check(False, message)

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {len(self.failed)} failed")
        sys.exit(1 if self.failed else 0)


def common_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--src", required=True, help="the source tree")
    parser.add_argument("--bin", required=True, help="the directory holding the built programs")
    parser.add_argument("--programs", required=True,
                        help="comma-separated programs the packages install (FLEETPMU_PACKAGE_PROGRAMS)")
    return parser


# ---- protobuf text format ---------------------------------------------------------------------

_TOKEN = re.compile(r'''\s+|\#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{}\[\]:,;<>]|[^\s{}\[\]:,;<>"'#]+''')


def _tokens(text):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"text format: cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        tok = m.group(0)
        if tok[0].isspace() or tok[0] == "#":
            continue
        yield tok


def parse_textproto(text):
    """Parses protobuf text format into {field: [values]}; a message value is such a dict, a
    scalar a str (strings unquoted). Enough for the configs: no extensions, no Any."""
    toks = list(_tokens(text))
    pos = 0

    def scalar(tok):
        if tok[0] in "\"'":
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        return tok

    def message(end):
        nonlocal pos
        fields = {}
        while pos < len(toks) and toks[pos] != end:
            name = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            if toks[pos] in "{<":
                close = "}" if toks[pos] == "{" else ">"
                pos += 1
                value = [message(close)]
                pos += 1
            elif toks[pos] == "[":
                pos += 1
                value = []
                while toks[pos] != "]":
                    if toks[pos] in "{<":
                        close = "}" if toks[pos] == "{" else ">"
                        pos += 1
                        value.append(message(close))
                        pos += 1
                    else:
                        value.append(scalar(toks[pos]))
                        pos += 1
                    if toks[pos] == ",":
                        pos += 1
                pos += 1
            else:
                value = [scalar(toks[pos])]
                pos += 1
            if pos < len(toks) and toks[pos] in ",;":
                pos += 1
            fields.setdefault(name, []).extend(value)
        return fields

    return message(None)


def field(config, path, default=None):
    """The first value at a dotted path (`tls.cert_file`), or default."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node or not node[part]:
            return default
        node = node[part][0]
    return node


def effective_config(bin_dir, program, path):
    """(config, note): the effective config of `program --config path`, validated by the program
    itself. The shim refuses BACKEND_KVM on every build but arm64 (hypervisor-shim/shim_main.cc),
    after the config has loaded and validated: then the file is read as written, and note says
    so. Raises ValueError with the program's message when it refuses the config."""
    result = subprocess.run([os.path.join(bin_dir, program), "--config", path, "--print_config"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return parse_textproto(result.stdout), None
    if (program == "fleetpmu-shim" and result.returncode == 2
            and "needs an arm64 build of the shim" in result.stderr):
        return parse_textproto(open(path).read()), "BACKEND_KVM: validated up to the arm64 check"
    raise ValueError(f"{program} refuses {path} (exit {result.returncode}): {result.stderr.strip()}")


# ---- addresses ---------------------------------------------------------------------------------

def split_host_port(address):
    """("host", port) of "host:port", "[v6]:port" or "dns:///host:port"; None for unix:."""
    if address.startswith("unix:"):
        return None
    address = re.sub(r"^dns:///", "", address)
    m = re.fullmatch(r"\[([^\]]*)\]:(\d+)|([^:]*):(\d+)", address)
    if not m:
        raise ValueError(f"not host:port: {address!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    return host, int(m.group(2) or m.group(4))


def is_loopback(host):
    return host in ("localhost", "::1") or host.startswith("127.")


def listen_addresses(kind, config):
    """{name: "host:port"} a daemon listens on (ServerConfig / AgentConfig); the shim listens on
    nothing."""
    if kind == "server":
        names = ("ingest_listen", "query_listen", "metrics_listen")
    elif kind == "agent":
        names = ("metrics_listen",)
    else:
        names = ()
    return {n: field(config, n) for n in names if field(config, n)}


def tls_files(kind, config):
    """Files a daemon opens at start (certificates, keys, the tokens file)."""
    files = [field(config, f"tls.{f}") for f in ("ca_file", "cert_file", "key_file")]
    if kind == "server":
        files.append(field(config, "tokens_file"))
    return [f for f in files if f]


def writable_paths(kind, config):
    """Directories a daemon must be able to write to: its database or spool, its socket."""
    if kind == "server":
        return [os.path.dirname(field(config, "storage.sqlite_path"))]
    if kind == "agent":
        return [os.path.dirname(field(config, "spool_path")),
                os.path.dirname(field(config, "shim_socket"))]
    return []


def under(path, directory):
    directory = directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def program_of(command, programs, bin_dir, problems, where):
    """The fleetpmu program a command runs: /usr/bin/<program>, one the packages install and
    this build made. None (and a failure) otherwise."""
    if not command:
        problems.fail(f"{where}: no command")
        return None
    path = command[0]
    name = os.path.basename(path)
    ok = problems.check(path == f"/usr/bin/{name}",
                        f"{where}: runs {path}, but the packages install programs in /usr/bin")
    ok &= problems.check(name in programs,
                         f"{where}: {name} is not a program the packages install ({', '.join(programs)})")
    ok &= problems.check(os.access(os.path.join(bin_dir, name), os.X_OK),
                         f"{where}: {name} is not in the build ({bin_dir})")
    return name if ok else None


def config_arg(args, problems, where):
    """The value of --config in a command line (`--config F` or `--config=F`)."""
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    problems.fail(f"{where}: no --config argument")
    return None
