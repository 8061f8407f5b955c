from services.planner.app import build_service
from shared.runner import run

raise SystemExit(run(build_service()))
