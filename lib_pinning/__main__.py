import sys
import warnings

# k-diffusion imports clip-anytorch, which imports the deprecated pkg_resources: not the user's concern.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from .cli import main  # noqa: E402

sys.exit(main())
