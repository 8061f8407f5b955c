from services.tuner.app import build_service
from shared.runner import run

raise SystemExit(run(build_service()))
