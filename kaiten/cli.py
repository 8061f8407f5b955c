"""The ``kaiten`` command: run a service, migrate the database, start the local stack."""

from __future__ import annotations

import asyncio
import importlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from shared.settings import SERVICE_NAMES, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def run(service: Annotated[str, typer.Argument(help=" | ".join(SERVICE_NAMES))]) -> None:
    """Run one service in the foreground (SIGTERM stops it gracefully)."""
    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(SERVICE_NAMES)}", param_hint="SERVICE")
    from shared.runner import run as run_service  # noqa: PLC0415 -- keep `kaiten --help` fast

    spec = importlib.import_module(f"services.{service}.app").build_service()
    raise typer.Exit(run_service(spec))


@app.command()
def migrate(
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only these services.")
    ] = None,
    downgrade: Annotated[
        str | None, typer.Option(help="Downgrade to this revision ('base' removes all).")
    ] = None,
) -> None:
    """Bring every service's schema to the latest revision (DATABASE_URL)."""
    from kaiten import migrate as m  # noqa: PLC0415
    from shared.migrations import current_revision  # noqa: PLC0415

    settings = Settings()
    services = tuple(service or SERVICE_NAMES)
    for name in services:
        m.script_location(name)  # reject unknown names before touching the database
    if downgrade is None:
        m.upgrade_all(settings.database_url, services)
    else:
        m.downgrade_all(settings.database_url, downgrade, services)
    for name in services:
        rev = asyncio.run(current_revision(name, settings.database_url))
        typer.echo(f"{name:<12} {rev or '(no tables)'}")


@app.command()
def cluster(
    *,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 6443,
    kubeconfig: Annotated[
        Path, typer.Option(help="Where to write the kubeconfig for kubectl and clients.")
    ] = Path(".kaiten/kubeconfig"),
    simulate: Annotated[
        bool, typer.Option(help="Run simulated nodes, pods, Deployments and Jobs.")
    ] = False,
    state: Annotated[
        Path | None, typer.Option(help="Keep the cluster's objects in this file across restarts.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    pods_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --simulate: where pods of local-cpu nodes, which run as local processes, "
            "keep their volumes and logs (default: next to --state, else a temporary folder)."
        ),
    ] = None,
    pod_ready_s: Annotated[
        float | None,
        typer.Option(
            envvar="KAITEN_CLUSTER_POD_READY_S",
            help="With --simulate: seconds before a simulated pod turns Ready (default 0.3).",
        ),
    ] = None,
) -> None:
    """Run the development cluster: a Kubernetes API emulator for the local stack and tests."""
    from localdev.kubeapi.cluster import serve_cluster  # noqa: PLC0415

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_cluster(
            host,
            port,
            kubeconfig.resolve(),
            state_file=state,
            simulate=simulate,
            stop=stop,
            pods_dir=pods_dir.resolve() if pods_dir is not None else None,
            pod_ready_s=pod_ready_s,
        )

    asyncio.run(main())


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print the Workspace CustomResourceDefinition generated from the models."""
    from shared.workspace.crd import workspace_crd_yaml  # noqa: PLC0415

    text = workspace_crd_yaml()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


presets_app = typer.Typer(help="The model presets and GPU instance types Kaiten knows.")
app.add_typer(presets_app, name="presets")


@presets_app.callback(invoke_without_command=True)
def presets(
    ctx: typer.Context,
    skus: Annotated[bool, typer.Option("--skus", help="List GPU instance types instead.")] = False,
    cloud: Annotated[
        str | None, typer.Option(help="Only this cloud's instance types (azure, azure-arc, aws).")
    ] = None,
) -> None:
    """List the model presets (or, with --skus, the GPU instance types)."""
    if ctx.invoked_subcommand is not None:
        return
    from presets.catalog import default_catalog  # noqa: PLC0415
    from presets.catalog.cli import format_presets, format_skus  # noqa: PLC0415

    catalog = default_catalog()
    typer.echo(format_skus(catalog, cloud) if skus else format_presets(catalog))


@presets_app.command("build-tiny")
def build_tiny(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Where to write the model (default: the local model store)."),
    ] = None,
) -> None:
    """Build the tiny test model offline: a model you can serve on a laptop, no download. Without
    DIRECTORY it goes to the local model store ($KAITEN_MODEL_STORE, else ~/.cache/kaiten/models),
    where the tiny-chat preset's pods find it."""
    from presets.tiny import build_tiny_model, model_store, stored_model  # noqa: PLC0415

    out = stored_model(model_store()) if directory is None else build_tiny_model(directory)
    typer.echo(f"tiny model written to {out}")


@app.command()
def serve(
    *,
    model: Annotated[Path, typer.Option(help="Folder with the model (config.json, weights).")],
    adapters_dir: Annotated[
        Path | None, typer.Option(help="Folder of LoRA adapter folders.")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients use (default: the folder's name).")
    ] = None,
    runtime: Annotated[str, typer.Option(help="transformers or vllm.")] = "transformers",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve a model exactly as an inference pod's entry point does."""
    name = served_model_name or model.name
    if runtime == "transformers":
        from presets.inference.server import main as serve_transformers  # noqa: PLC0415

        argv = [
            "--model",
            str(model),
            "--port",
            str(port),
            "--served-model-name",
            name,
            "--host",
            host,
        ]
        if adapters_dir is not None:
            argv += ["--adapters-dir", str(adapters_dir)]
        raise typer.Exit(serve_transformers(argv))
    if runtime == "vllm":
        from presets.inference.vllm_launcher import main as serve_vllm  # noqa: PLC0415

        argv = ["--model", str(model), "--port", str(port), "--served-model-name", name]
        if adapters_dir is not None:
            argv += ["--enable-lora", "--kaito-adapters-dir", str(adapters_dir)]
        raise typer.Exit(serve_vllm(argv))
    raise typer.BadParameter("choose transformers or vllm", param_hint="--runtime")


@app.command("port-forward")
def port_forward(
    target: Annotated[
        str,
        typer.Argument(metavar="TARGET", help="svc/NAME, service/NAME, pod/NAME or NAME (a pod)."),
    ],
    ports: Annotated[
        list[str],
        typer.Argument(
            metavar="[LOCAL:]REMOTE",
            help="LOCAL:REMOTE, REMOTE (same local port) or :REMOTE (a free local port, printed); "
            "REMOTE is a service port for svc/ (a number or its name), else a pod port.",
            show_default=False,
        ),
    ],
    *,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Namespace (default: the kubeconfig context's, else default)."
        ),
    ] = None,
    address: Annotated[
        str, typer.Option(help="Local addresses to listen on, comma separated (localhost: both).")
    ] = "127.0.0.1",
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig file (default: KUBECONFIG, ~/.kube/config).")
    ] = None,
) -> None:
    """Forward local ports to a pod or a Service, like kubectl port-forward, on the development
    cluster too: its local-cpu pods are local processes on loopback pod IPs (127.100.x.y), so each
    connection is piped straight to podIP:port (looked up again per connection, as pods restart).
    For svc/ a Running and Ready pod the selector matches is picked and the service port mapped to
    its targetPort. It fails at start when no pod can be found; later, a connection that cannot
    reach the pod is closed with an error on stderr. Runs until Ctrl-C or SIGTERM. When the pod's
    IP is not a loopback address (a real cluster), it runs `kubectl port-forward` with the same
    arguments instead."""
    from kaiten.portforward import Options  # noqa: PLC0415
    from kaiten.portforward import main as forward_main  # noqa: PLC0415

    options = Options(
        target=target,
        ports=tuple(ports),
        namespace=namespace,
        address=address,
        kubeconfig=kubeconfig,
    )
    raise typer.Exit(forward_main(options))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tune(ctx: typer.Context) -> None:
    """Fine-tune an adapter exactly as the tuning image does: --config FILE --data DIR
    --output DIR [--model DIR] [--method lora|qlora] [--progress-port N]."""
    from presets.tuning.cli import main as tune_main  # noqa: PLC0415

    raise typer.Exit(tune_main(list(ctx.args)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def oci(ctx: typer.Context) -> None:
    """Push or pull OCI artifacts (adapters, datasets, weights): push DIR REF | pull REF DIR,
    with --docker-config FILE for credentials."""
    from presets.oci import main as oci_main  # noqa: PLC0415

    raise typer.Exit(oci_main(list(ctx.args)))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Workspace YAML files (- for stdin).")],
    old: Annotated[
        Path | None, typer.Option(help="The Workspace before the change, to check an update.")
    ] = None,
) -> None:
    """Validate Workspace YAML offline with the admission webhook's rules."""
    from kaiten.lint import validate_files  # noqa: PLC0415

    settings = Settings()
    raise typer.Exit(validate_files(files, old, settings, echo=typer.echo))


@app.command()
def plan(
    file: Annotated[Path, typer.Argument(help="Workspace YAML file (- for stdin).")],
    *,
    instance_type: Annotated[
        str | None,
        typer.Option("--instance-type", help="Plan on this instance type instead of the file's."),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    cloud: Annotated[str, typer.Option(help="azure, aws or arc.")] = "azure",
    byo: Annotated[
        bool, typer.Option("--byo", help="Bring your own nodes: no node auto-provisioning.")
    ] = False,
    configmap: Annotated[
        list[Path] | None,
        typer.Option("--configmap", help="ConfigMap YAML a Workspace names (repeatable)."),
    ] = None,
    check_azure: Annotated[
        bool,
        typer.Option(
            "--check-azure",
            help="Also ask Azure whether the planned nodes fit the regional vCPU quota of the "
            "instance type's family (needs ARM_SUBSCRIPTION_ID, LOCATION and Azure "
            "credentials, e.g. `az login`).",
        ),
    ] = False,
) -> None:
    """Plan Workspace YAML offline: GPUs, runtime, memory, command line and price, before any
    GPU is requested; exit 1 when a Workspace is rejected (or, with --check-azure, does not
    fit the quota)."""
    if output not in ("text", "json"):
        raise typer.BadParameter("choose text or json", param_hint="--output")
    if cloud not in ("azure", "aws", "arc"):
        raise typer.BadParameter("choose azure, aws or arc", param_hint="--cloud")
    from kaiten.plan import plan_file  # noqa: PLC0415
    from presets.catalog import default_catalog  # noqa: PLC0415
    from presets.catalog.prices import default_prices  # noqa: PLC0415
    from services.planner.planning import PlanOptions  # noqa: PLC0415

    options = PlanOptions(
        catalog=default_catalog(),
        prices=default_prices(),
        cloud=cloud,
        node_auto_provisioning=not byo,
    )
    quota = None
    if check_azure:
        from services.provisioner.azure import AzureSettings, quota_lookup  # noqa: PLC0415
        from shared.errors import ConfigError  # noqa: PLC0415

        try:
            quota = quota_lookup(AzureSettings())
        except ConfigError as e:
            typer.echo(f"error: --check-azure: {e}", err=True)
            raise typer.Exit(2) from e
    code = plan_file(
        file,
        configmap or [],
        options,
        instance_type=instance_type,
        output=output,
        echo=typer.echo,
        echo_err=lambda text: typer.echo(text, err=True),
        quota=quota,
    )
    raise typer.Exit(code)


@app.command()
def up() -> None:
    """Start Kaiten on the embedded local stack (what exists of it so far)."""
    from localdev import stack  # noqa: PLC0415

    raise typer.Exit(stack.up())


@app.command()
def down() -> None:
    """Stop what `kaiten up` started."""
    from localdev import stack  # noqa: PLC0415

    raise typer.Exit(stack.down())


@app.command()
def status() -> None:
    """Show what `kaiten up` started and whether each part answers."""
    from localdev import stack  # noqa: PLC0415

    raise typer.Exit(stack.status())


@app.command()
def logs(
    service: Annotated[
        str | None,
        typer.Argument(
            metavar="SERVICE",
            help="One log: a service, cluster, nats-server or postgres (default: all).",
        ),
    ] = None,
    *,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many of the last lines to print.")
    ] = 100,
    raw: Annotated[bool, typer.Option("--raw", help="Print the lines as stored (JSON).")] = False,
) -> None:
    """Print the local stack's logs ($KAITEN_HOME/logs), readable: time, level, service, event
    and fields. Without SERVICE, every log interleaved by time, each line prefixed by its
    source."""
    from localdev import stack  # noqa: PLC0415
    from localdev.logs import SOURCES  # noqa: PLC0415

    if service is not None and service not in SOURCES:
        typer.echo(f"error: no log named {service!r}; choose one of {', '.join(SOURCES)}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(stack.logs(service, lines=lines, follow=follow, raw=raw))


@app.command()
def asyncapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="First subject token.")] = "kaiten",
) -> None:
    """Print the AsyncAPI 3.0 document of every event subject and payload (docs/asyncapi.yaml)."""
    from shared.asyncapi import asyncapi_document, render_yaml  # noqa: PLC0415

    text = render_yaml(asyncapi_document(prefix))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@app.command()
def events(
    *,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="After the replay, print new events until Ctrl-C."),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION|TIME",
            help="Start here: a duration back from now (45s, 10m, 2h, 1h30m, 3d) or an RFC 3339 "
            "time (2026-11-21T12:00:00Z; without a zone, local time). Default: the oldest event.",
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace's workspaces.")
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", metavar="NAME", help="Only workspaces of this name."),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type", metavar="TYPE", help="Only this event type (plan.ready ...) or deadletter."
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, or json: one stored event per line.")
    ] = "table",
) -> None:
    """Read the event stream (NATS_URL, KAITEN_STREAM): one line per event with time, type,
    source, workspace, correlation id and a summary; exit once caught up, or with --follow keep
    printing. Filters narrow on the server; nothing is left on the stream."""
    from kaiten import events as ev  # noqa: PLC0415

    try:
        options = ev.build_options(
            follow=follow,
            since=since,
            namespace=namespace,
            workspace=workspace,
            event_type=event_type,
            output=output,
        )
    except ev.UsageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    raise typer.Exit(ev.main(options, Settings()))


@app.command()
def history(
    target: Annotated[str, typer.Argument(metavar="NAMESPACE/NAME")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="text, or json: one object per generation.")
    ] = "text",
) -> None:
    """Every generation of a Workspace from the audit log (DATABASE_URL): when it reached each
    phase (observed, planned, nodes requested and ready, workload created, pods ready, tuning
    started and finished, succeeded or failed) and how long each took."""
    from kaiten import history as hist  # noqa: PLC0415

    raise typer.Exit(hist.main(target, output, Settings()))


@app.command()
def why(
    target: Annotated[str, typer.Argument(metavar="NAMESPACE/NAME")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="text, or json: the diagnosis as one object.")
    ] = "text",
) -> None:
    """What a Workspace is waiting on, or why it failed, with a concrete next step: reads the
    Workspace and its pods (KUBECONFIG), the last log lines of failing containers and the audit
    log (DATABASE_URL; skipped when unreachable). Exit 0 when it is ready or succeeded, 1 when it
    waits or failed, 2 when it does not exist or the API cannot be reached."""
    from kaiten import why as diagnosis  # noqa: PLC0415

    raise typer.Exit(diagnosis.main(target, output, Settings()))


def main() -> None:
    app()
