"""What the image layer raises about an upload; the web layer maps each to a 4xx."""


class InvalidImage(ValueError):
    """The upload is not an image we can process (400)."""

    code = "invalid_image"


class UnsupportedImage(InvalidImage):
    """The upload is an image in a format we do not accept (415)."""

    code = "unsupported_image"


class ImageTooLarge(InvalidImage):
    """The image declares more pixels than the budget (413)."""

    code = "image_too_large"


class DecodeBudgetExceeded(ImageTooLarge):
    """Decoding the image would take more memory than the budget (413)."""

    code = "decode_budget_exceeded"


class OutputTooLarge(ImageTooLarge):
    """The answer would be larger than its format's encoder can make within
    the worker's memory (413)."""

    code = "output_too_large"
