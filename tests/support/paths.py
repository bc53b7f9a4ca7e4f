"""Where the repository and the tests' data files are, whatever folder a test lives in."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = REPO_ROOT / "tests" / "data"
DEMO_MODEL = REPO_ROOT / "sample_data" / "demo-model"
SAMPLE_IMAGES = REPO_ROOT / "sample_data" / "images"
