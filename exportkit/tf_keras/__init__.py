"""Legacy Keras 2 models (the ``tf-keras`` package, ``pip install 'exportkit[tf_keras]'``): the
model source (``model=tf_keras``, or in memory through the API), their train/eval steps, and
``load_from_saved_model`` for their exports."""

INSTALL_HINT = "pip install 'exportkit[tf_keras]' (tf-keras>=2.21,<2.22)"
