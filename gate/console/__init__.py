"""The operator console: an HTTP API and one live web page, served inside the gate process.

``server`` runs uvicorn on its own thread and event loop (``http.port`` in the config);
``app`` assembles the FastAPI application: one router per concern (``cameras``,
``events``, ``media``, ``stream``, ``service``), pydantic bodies (``models``), the token
guard (``auth``), and the static page (``static/``: plain HTML, JS and CSS, no build step).
Everything the API says about cameras and events goes through ``views``, the one place
that removes credentials before anything leaves the process. The API reads Redis (the
registry, camera states, the event and status streams; ``feed`` follows the streams for
live pages) and never touches the frame path.
"""
