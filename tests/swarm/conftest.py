from tests.container.conftest import prod_image  # noqa: F401 - the image the swarm runs
