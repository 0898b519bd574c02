"""`python -m accel` works like `accel`."""

from accel.cli import main

if __name__ == "__main__":
    main()
