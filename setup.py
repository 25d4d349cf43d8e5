"""ament_python package: `colcon build` in a ROS 2 workspace, or `pip install -e .` in a venv."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "demoprof_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["core/model_configs/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.json") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/experiments", glob("config/experiments/*.yaml")),
        (f"share/{PACKAGE}/models", ["models/README.md"]),
        # The shipped model (core/shipped_model.find_shipped looks here in a colcon/ament install).
        (f"share/{PACKAGE}/models/demoprof-mobilenetv2-112", glob("models/demoprof-mobilenetv2-112/*")),
        # The public-domain sample photos (image_source's default input, `make demo`).
        (f"share/{PACKAGE}/data", glob("test/data/group_photos/*")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="demoprof_ros maintainers",
    maintainer_email="demoprof@example.org",
    description="Perceived demographic user modelling for social robots with CLIP / FaRL (ROS 2).",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "demoprof = demoprof_ros.cli:main",
            "demoprof-train = demoprof_ros.cli:train_main",
            "demoprof-eval = demoprof_ros.cli:eval_main",
            "profiler_node = demoprof_ros.ros.profiler_node:main",
            "image_source = demoprof_ros.ros.image_source:main",
            "profile_echo = demoprof_ros.ros.profile_echo:main",
        ],
    },
)
