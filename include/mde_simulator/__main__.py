import sys

from .config import parse_args
from .server import serve

if __name__ == "__main__":
    sys.exit(serve(parse_args()))
