"""Seldon resource YAML shared by several test modules."""

# The docs' tfsimples chain (tfsimple1 -> tfsimple2 with a tensorMap), formatted as users write it.
TFSIMPLES = """
apiVersion: mlops.seldon.io/v1alpha1
kind: Pipeline
metadata:
  name: tfsimples
spec:
  steps:
    - name: tfsimple1
    - name: tfsimple2
      inputs:
      - tfsimple1
      tensorMap:
        tfsimple1.outputs.OUTPUT0: INPUT0
        tfsimple1.outputs.OUTPUT1: INPUT1
  output:
    steps:
    - tfsimple2
"""


def models_yaml(*names: str, endpoint: str = "grpc://127.0.0.1:1") -> str:
    """Model resources for ``names``: a pipeline is PipelineReady for ``-w`` only once its step
    models are loaded. The endpoint is not called unless a model gateway serves the model."""
    return "".join(f"---\nkind: Model\nmetadata: {{name: {n}}}\nspec: {{endpoint: \"{endpoint}\"}}\n" for n in names)
