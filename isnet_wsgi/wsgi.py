"""gunicorn's entry point, ``isnet_wsgi.wsgi:application``.

Importing this module builds the service from the environment; a bad setting
or a missing or tampered model stops start-up here with one clear message.
"""

from .service import create_app

application = create_app()
