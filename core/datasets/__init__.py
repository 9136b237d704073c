"""Datasets: import (Python and bulk DuckDB paths), dataset versions, the review sample, and pair
generation from raw documents. Imports nothing, so that the generation worker stays app-free."""
