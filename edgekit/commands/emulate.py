"""`edgekit emulate setup|info|clean`: the emulated aarch64 environment that `edgekit validate --emulate aarch64`
and the `emulated` bench device run in (qemu-user, an arm64 Python, aarch64 wheels), cached per runtime version.

Exit codes: 0 done, 2 cannot build here (a missing tool, no route to the package archives: the message says what
to install or where to point it).
"""

from __future__ import annotations

from .common import write_json


def add_parser(sub) -> None:
    p = sub.add_parser("emulate", help="manage the emulated aarch64 environment (qemu-user, no board)",
                       description="Build, describe or remove the emulated aarch64 Python that validate --emulate "
                                   "uses. Nothing is installed into the system.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    setup = actions.add_parser("setup", help="build the environment for this host's runtime versions (once)")
    setup.add_argument("--force", action="store_true", help="rebuild even if a finished one exists")
    show = actions.add_parser("info", help="where it is, what it holds, and how it compares with the host")
    show.add_argument("--json", metavar="FILE", help="also write it as JSON (- for stdout)")
    actions.add_parser("clean", help="remove every cached environment")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import emulate

    if args.action == "setup":
        env = None if args.force else emulate.find_environment()
        if env is not None:
            print(f"already built: {env.root} (edgekit emulate setup --force rebuilds it)")
        else:
            if args.force:
                import shutil

                shutil.rmtree(emulate.cache_root() / emulate.environment_key(), ignore_errors=True)
            env = emulate.build_environment()
        _describe(emulate, env)
        return 0
    if args.action == "info":
        env = emulate.find_environment()
        record = {"cache": str(emulate.cache_root()), "key": emulate.environment_key(), "built": env is not None,
                  "host_runtimes": emulate.host_versions()}
        if env is None:
            problem = emulate.environment_problem()
            print(f"not built: {emulate.cache_root() / emulate.environment_key()}")
            print(f"  {'cannot build here: ' + problem if problem else 'run `edgekit emulate setup` to build it'}")
            record["problem"] = problem
        else:
            _describe(emulate, env)
            record.update(root=str(env.root), stamp=env.stamp, differences=env.version_differences())
        if args.json:
            write_json(args.json, record)
        return 0
    count, size = emulate.clean_environments()
    print(f"removed {count} folder(s), {size / 1e6:.0f} MB from {emulate.cache_root()}" if count
          else f"nothing to remove in {emulate.cache_root()}")
    return 0


def _describe(emulate, env) -> None:
    from ..table import format_table

    s = env.stamp
    host = emulate.host_versions()
    print(f"emulated aarch64 environment: {env.root}")
    print(f"  qemu-user {s.get('qemu')} (Debian {s.get('debian')}-backports), arm64 Python {s.get('python')}, "
          f"{s.get('bytes', 0) / 1e6:.0f} MB, built {s.get('created')} in {s.get('build_seconds')} s")
    print(format_table(["runtime", "emulated", "host", ""],
                       [[n, env.versions.get(n), host.get(n), "" if env.versions.get(n) == host.get(n) else "DIFFERS"]
                        for n in emulate.RUNTIMES]))
    print(f"  CPU models: {', '.join(s.get('cpus') or [])}; default {','.join(emulate.DEFAULT_CPUS)}")
    print(f"  an emulated python3 for scripts and SSH profiles: {env.wrapper()} (QEMU_CPU picks the model)")
