"""Tasks from outside the renderer: import an image folder (or CSV) into the render split format, export back."""
from .export import export_task
from .folder import FolderError, FolderSpec, import_folder, scan_folder

__all__ = ["FolderError", "FolderSpec", "export_task", "import_folder", "scan_folder"]
