"""Errors a user can cause (bad path, wrong checkpoint, malformed data)."""


class UserError(Exception):
    """An error caused by user input; the CLI prints it as one line, no traceback."""


def check_imgsz(imgsz: int, option: str = "--imgsz") -> int:
    """The input size every command accepts: a positive multiple of 32 (the stride of the last level), else one line."""
    if imgsz <= 0 or imgsz % 32:
        raise UserError(f"{option} must be a positive multiple of 32 (the stride of the last level), got {imgsz}")
    return imgsz
