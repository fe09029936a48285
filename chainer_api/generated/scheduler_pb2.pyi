import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import chainer_pb2 as _chainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL: _ClassVar[ResourceType]
    PIPELINE: _ClassVar[ResourceType]
MODEL: ResourceType
PIPELINE: ResourceType

class LoadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("meta", "modelSpec", "deploymentSpec", "streamSpec", "dataflowSpec")
    META_FIELD_NUMBER: _ClassVar[int]
    MODELSPEC_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTSPEC_FIELD_NUMBER: _ClassVar[int]
    STREAMSPEC_FIELD_NUMBER: _ClassVar[int]
    DATAFLOWSPEC_FIELD_NUMBER: _ClassVar[int]
    meta: MetaData
    modelSpec: ModelSpec
    deploymentSpec: DeploymentSpec
    streamSpec: StreamSpec
    dataflowSpec: DataflowSpec
    def __init__(self, meta: _Optional[_Union[MetaData, _Mapping]] = ..., modelSpec: _Optional[_Union[ModelSpec, _Mapping]] = ..., deploymentSpec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., streamSpec: _Optional[_Union[StreamSpec, _Mapping]] = ..., dataflowSpec: _Optional[_Union[DataflowSpec, _Mapping]] = ...) -> None: ...

class MetaData(_message.Message):
    __slots__ = ("name", "kind", "version", "kubernetesMeta")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    version: str
    kubernetesMeta: KubernetesMeta
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[str] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ...) -> None: ...

class DeploymentSpec(_message.Message):
    __slots__ = ("replicas", "minReplicas", "maxReplicas", "logPayloads")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MINREPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAXREPLICAS_FIELD_NUMBER: _ClassVar[int]
    LOGPAYLOADS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    minReplicas: int
    maxReplicas: int
    logPayloads: bool
    def __init__(self, replicas: _Optional[int] = ..., minReplicas: _Optional[int] = ..., maxReplicas: _Optional[int] = ..., logPayloads: _Optional[bool] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("uri", "artifactVersion", "storageConfig", "requirements", "memoryBytes", "server", "parameters", "modelRuntimeInfo", "explainer", "llm")
    URI_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTVERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGECONFIG_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    MEMORYBYTES_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODELRUNTIMEINFO_FIELD_NUMBER: _ClassVar[int]
    EXPLAINER_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    uri: str
    artifactVersion: int
    storageConfig: StorageConfig
    requirements: _containers.RepeatedScalarFieldContainer[str]
    memoryBytes: int
    server: str
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterSpec]
    modelRuntimeInfo: ModelRuntimeInfo
    explainer: ExplainerSpec
    llm: LlmSpec
    def __init__(self, uri: _Optional[str] = ..., artifactVersion: _Optional[int] = ..., storageConfig: _Optional[_Union[StorageConfig, _Mapping]] = ..., requirements: _Optional[_Iterable[str]] = ..., memoryBytes: _Optional[int] = ..., server: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ParameterSpec, _Mapping]]] = ..., modelRuntimeInfo: _Optional[_Union[ModelRuntimeInfo, _Mapping]] = ..., explainer: _Optional[_Union[ExplainerSpec, _Mapping]] = ..., llm: _Optional[_Union[LlmSpec, _Mapping]] = ...) -> None: ...

class ParameterSpec(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ExplainerSpec(_message.Message):
    __slots__ = ("type", "modelRef", "pipelineRef")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODELREF_FIELD_NUMBER: _ClassVar[int]
    PIPELINEREF_FIELD_NUMBER: _ClassVar[int]
    type: str
    modelRef: str
    pipelineRef: str
    def __init__(self, type: _Optional[str] = ..., modelRef: _Optional[str] = ..., pipelineRef: _Optional[str] = ...) -> None: ...

class LlmSpec(_message.Message):
    __slots__ = ("modelRef", "pipelineRef")
    MODELREF_FIELD_NUMBER: _ClassVar[int]
    PIPELINEREF_FIELD_NUMBER: _ClassVar[int]
    modelRef: str
    pipelineRef: str
    def __init__(self, modelRef: _Optional[str] = ..., pipelineRef: _Optional[str] = ...) -> None: ...

class ModelRuntimeInfo(_message.Message):
    __slots__ = ("mlserver", "triton")
    MLSERVER_FIELD_NUMBER: _ClassVar[int]
    TRITON_FIELD_NUMBER: _ClassVar[int]
    mlserver: MLServerModelSettings
    triton: TritonModelConfig
    def __init__(self, mlserver: _Optional[_Union[MLServerModelSettings, _Mapping]] = ..., triton: _Optional[_Union[TritonModelConfig, _Mapping]] = ...) -> None: ...

class MLServerModelSettings(_message.Message):
    __slots__ = ("parallelWorkers",)
    PARALLELWORKERS_FIELD_NUMBER: _ClassVar[int]
    parallelWorkers: int
    def __init__(self, parallelWorkers: _Optional[int] = ...) -> None: ...

class TritonModelConfig(_message.Message):
    __slots__ = ("cpu",)
    CPU_FIELD_NUMBER: _ClassVar[int]
    cpu: _containers.RepeatedCompositeFieldContainer[TritonCPU]
    def __init__(self, cpu: _Optional[_Iterable[_Union[TritonCPU, _Mapping]]] = ...) -> None: ...

class TritonCPU(_message.Message):
    __slots__ = ("instanceCount",)
    INSTANCECOUNT_FIELD_NUMBER: _ClassVar[int]
    instanceCount: int
    def __init__(self, instanceCount: _Optional[int] = ...) -> None: ...

class KubernetesMeta(_message.Message):
    __slots__ = ("namespace", "generation")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    generation: int
    def __init__(self, namespace: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class StreamSpec(_message.Message):
    __slots__ = ("inputTopic", "outputTopic")
    INPUTTOPIC_FIELD_NUMBER: _ClassVar[int]
    OUTPUTTOPIC_FIELD_NUMBER: _ClassVar[int]
    inputTopic: str
    outputTopic: str
    def __init__(self, inputTopic: _Optional[str] = ..., outputTopic: _Optional[str] = ...) -> None: ...

class StorageConfig(_message.Message):
    __slots__ = ("storageSecretName", "storageRcloneConfig")
    STORAGESECRETNAME_FIELD_NUMBER: _ClassVar[int]
    STORAGERCLONECONFIG_FIELD_NUMBER: _ClassVar[int]
    storageSecretName: str
    storageRcloneConfig: str
    def __init__(self, storageSecretName: _Optional[str] = ..., storageRcloneConfig: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelReference(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model", "kubernetesMeta")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    model: ModelReference
    kubernetesMeta: KubernetesMeta
    def __init__(self, model: _Optional[_Union[ModelReference, _Mapping]] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatusResponse(_message.Message):
    __slots__ = ("modelName", "versions", "deleted", "keepTopics", "timestamp", "operation")
    class ModelOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ModelOperationUnknown: _ClassVar[ModelStatusResponse.ModelOperation]
        ModelCreate: _ClassVar[ModelStatusResponse.ModelOperation]
        ModelDelete: _ClassVar[ModelStatusResponse.ModelOperation]
    ModelOperationUnknown: ModelStatusResponse.ModelOperation
    ModelCreate: ModelStatusResponse.ModelOperation
    ModelDelete: ModelStatusResponse.ModelOperation
    MODELNAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    KEEPTOPICS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    modelName: str
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionStatus]
    deleted: bool
    keepTopics: bool
    timestamp: int
    operation: ModelStatusResponse.ModelOperation
    def __init__(self, modelName: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[ModelVersionStatus, _Mapping]]] = ..., deleted: _Optional[bool] = ..., keepTopics: _Optional[bool] = ..., timestamp: _Optional[int] = ..., operation: _Optional[_Union[ModelStatusResponse.ModelOperation, str]] = ...) -> None: ...

class ModelVersionStatus(_message.Message):
    __slots__ = ("version", "serverName", "kubernetesMeta", "modelReplicaState", "state", "modelDefn")
    class ModelReplicaStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: ModelReplicaStatus
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[ModelReplicaStatus, _Mapping]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVERNAME_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    MODELREPLICASTATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODELDEFN_FIELD_NUMBER: _ClassVar[int]
    version: int
    serverName: str
    kubernetesMeta: KubernetesMeta
    modelReplicaState: _containers.MessageMap[int, ModelReplicaStatus]
    state: ModelStatus
    modelDefn: Model
    def __init__(self, version: _Optional[int] = ..., serverName: _Optional[str] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ..., modelReplicaState: _Optional[_Mapping[int, ModelReplicaStatus]] = ..., state: _Optional[_Union[ModelStatus, _Mapping]] = ..., modelDefn: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("state", "reason", "availableReplicas", "unavailableReplicas", "lastChangeTimestamp", "modelGwState", "modelGwReason")
    class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ModelStateUnknown: _ClassVar[ModelStatus.ModelState]
        ModelProgressing: _ClassVar[ModelStatus.ModelState]
        ModelAvailable: _ClassVar[ModelStatus.ModelState]
        ModelFailed: _ClassVar[ModelStatus.ModelState]
        ModelTerminating: _ClassVar[ModelStatus.ModelState]
        ModelTerminated: _ClassVar[ModelStatus.ModelState]
        ModelTerminateFailed: _ClassVar[ModelStatus.ModelState]
        ScheduleFailed: _ClassVar[ModelStatus.ModelState]
        ModelScaledDown: _ClassVar[ModelStatus.ModelState]
        ModelCreate: _ClassVar[ModelStatus.ModelState]
        ModelTerminate: _ClassVar[ModelStatus.ModelState]
    ModelStateUnknown: ModelStatus.ModelState
    ModelProgressing: ModelStatus.ModelState
    ModelAvailable: ModelStatus.ModelState
    ModelFailed: ModelStatus.ModelState
    ModelTerminating: ModelStatus.ModelState
    ModelTerminated: ModelStatus.ModelState
    ModelTerminateFailed: ModelStatus.ModelState
    ScheduleFailed: ModelStatus.ModelState
    ModelScaledDown: ModelStatus.ModelState
    ModelCreate: ModelStatus.ModelState
    ModelTerminate: ModelStatus.ModelState
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AVAILABLEREPLICAS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLEREPLICAS_FIELD_NUMBER: _ClassVar[int]
    LASTCHANGETIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODELGWSTATE_FIELD_NUMBER: _ClassVar[int]
    MODELGWREASON_FIELD_NUMBER: _ClassVar[int]
    state: ModelStatus.ModelState
    reason: str
    availableReplicas: int
    unavailableReplicas: int
    lastChangeTimestamp: _timestamp_pb2.Timestamp
    modelGwState: ModelStatus.ModelState
    modelGwReason: str
    def __init__(self, state: _Optional[_Union[ModelStatus.ModelState, str]] = ..., reason: _Optional[str] = ..., availableReplicas: _Optional[int] = ..., unavailableReplicas: _Optional[int] = ..., lastChangeTimestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., modelGwState: _Optional[_Union[ModelStatus.ModelState, str]] = ..., modelGwReason: _Optional[str] = ...) -> None: ...

class ModelReplicaStatus(_message.Message):
    __slots__ = ("state", "reason", "lastChangeTimestamp")
    class ModelReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ModelReplicaStateUnknown: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        LoadRequested: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Loading: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Loaded: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        LoadFailed: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        UnloadRequested: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Unloading: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Unloaded: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        UnloadFailed: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Available: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        LoadedUnavailable: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        UnloadEnvoyRequested: _ClassVar[ModelReplicaStatus.ModelReplicaState]
        Draining: _ClassVar[ModelReplicaStatus.ModelReplicaState]
    ModelReplicaStateUnknown: ModelReplicaStatus.ModelReplicaState
    LoadRequested: ModelReplicaStatus.ModelReplicaState
    Loading: ModelReplicaStatus.ModelReplicaState
    Loaded: ModelReplicaStatus.ModelReplicaState
    LoadFailed: ModelReplicaStatus.ModelReplicaState
    UnloadRequested: ModelReplicaStatus.ModelReplicaState
    Unloading: ModelReplicaStatus.ModelReplicaState
    Unloaded: ModelReplicaStatus.ModelReplicaState
    UnloadFailed: ModelReplicaStatus.ModelReplicaState
    Available: ModelReplicaStatus.ModelReplicaState
    LoadedUnavailable: ModelReplicaStatus.ModelReplicaState
    UnloadEnvoyRequested: ModelReplicaStatus.ModelReplicaState
    Draining: ModelReplicaStatus.ModelReplicaState
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LASTCHANGETIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    state: ModelReplicaStatus.ModelReplicaState
    reason: str
    lastChangeTimestamp: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[ModelReplicaStatus.ModelReplicaState, str]] = ..., reason: _Optional[str] = ..., lastChangeTimestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ServerStatusRequest(_message.Message):
    __slots__ = ("subscriberName", "name")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    name: str
    def __init__(self, subscriberName: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ServerStatusResponse(_message.Message):
    __slots__ = ("type", "serverName", "resources", "expectedReplicas", "availableReplicas", "numLoadedModelReplicas", "kubernetesMeta")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        StatusResponseTypeUnknown: _ClassVar[ServerStatusResponse.Type]
        StatusUpdate: _ClassVar[ServerStatusResponse.Type]
        NonAuthoritativeReplicaInfo: _ClassVar[ServerStatusResponse.Type]
        ScalingRequest: _ClassVar[ServerStatusResponse.Type]
    StatusResponseTypeUnknown: ServerStatusResponse.Type
    StatusUpdate: ServerStatusResponse.Type
    NonAuthoritativeReplicaInfo: ServerStatusResponse.Type
    ScalingRequest: ServerStatusResponse.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVERNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    EXPECTEDREPLICAS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLEREPLICAS_FIELD_NUMBER: _ClassVar[int]
    NUMLOADEDMODELREPLICAS_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    type: ServerStatusResponse.Type
    serverName: str
    resources: _containers.RepeatedCompositeFieldContainer[ServerReplicaResources]
    expectedReplicas: int
    availableReplicas: int
    numLoadedModelReplicas: int
    kubernetesMeta: KubernetesMeta
    def __init__(self, type: _Optional[_Union[ServerStatusResponse.Type, str]] = ..., serverName: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[ServerReplicaResources, _Mapping]]] = ..., expectedReplicas: _Optional[int] = ..., availableReplicas: _Optional[int] = ..., numLoadedModelReplicas: _Optional[int] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ...) -> None: ...

class ServerReplicaResources(_message.Message):
    __slots__ = ("replicaIdx", "totalMemoryBytes", "availableMemoryBytes", "numLoadedModels", "overCommitPercentage")
    REPLICAIDX_FIELD_NUMBER: _ClassVar[int]
    TOTALMEMORYBYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLEMEMORYBYTES_FIELD_NUMBER: _ClassVar[int]
    NUMLOADEDMODELS_FIELD_NUMBER: _ClassVar[int]
    OVERCOMMITPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    replicaIdx: int
    totalMemoryBytes: int
    availableMemoryBytes: int
    numLoadedModels: int
    overCommitPercentage: int
    def __init__(self, replicaIdx: _Optional[int] = ..., totalMemoryBytes: _Optional[int] = ..., availableMemoryBytes: _Optional[int] = ..., numLoadedModels: _Optional[int] = ..., overCommitPercentage: _Optional[int] = ...) -> None: ...

class ModelSubscriptionRequest(_message.Message):
    __slots__ = ("subscriberName", "isModelGateway")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    ISMODELGATEWAY_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    isModelGateway: bool
    def __init__(self, subscriberName: _Optional[str] = ..., isModelGateway: _Optional[bool] = ...) -> None: ...

class ModelStatusRequest(_message.Message):
    __slots__ = ("subscriberName", "model", "allVersions")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALLVERSIONS_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    model: ModelReference
    allVersions: bool
    def __init__(self, subscriberName: _Optional[str] = ..., model: _Optional[_Union[ModelReference, _Mapping]] = ..., allVersions: _Optional[bool] = ...) -> None: ...

class ServerNotifyRequest(_message.Message):
    __slots__ = ("servers", "isFirstSync")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    ISFIRSTSYNC_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[ServerNotify]
    isFirstSync: bool
    def __init__(self, servers: _Optional[_Iterable[_Union[ServerNotify, _Mapping]]] = ..., isFirstSync: _Optional[bool] = ...) -> None: ...

class ServerNotify(_message.Message):
    __slots__ = ("name", "expectedReplicas", "minReplicas", "maxReplicas", "shared", "kubernetesMeta")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTEDREPLICAS_FIELD_NUMBER: _ClassVar[int]
    MINREPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAXREPLICAS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    name: str
    expectedReplicas: int
    minReplicas: int
    maxReplicas: int
    shared: bool
    kubernetesMeta: KubernetesMeta
    def __init__(self, name: _Optional[str] = ..., expectedReplicas: _Optional[int] = ..., minReplicas: _Optional[int] = ..., maxReplicas: _Optional[int] = ..., shared: _Optional[bool] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ...) -> None: ...

class ServerNotifyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerSubscriptionRequest(_message.Message):
    __slots__ = ("subscriberName",)
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    def __init__(self, subscriberName: _Optional[str] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "default", "candidates", "mirror", "config", "kubernetesMeta", "resourceType")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    RESOURCETYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    default: str
    candidates: _containers.RepeatedCompositeFieldContainer[ExperimentCandidate]
    mirror: ExperimentMirror
    config: ExperimentConfig
    kubernetesMeta: KubernetesMeta
    resourceType: ResourceType
    def __init__(self, name: _Optional[str] = ..., default: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ExperimentCandidate, _Mapping]]] = ..., mirror: _Optional[_Union[ExperimentMirror, _Mapping]] = ..., config: _Optional[_Union[ExperimentConfig, _Mapping]] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ..., resourceType: _Optional[_Union[ResourceType, str]] = ...) -> None: ...

class ExperimentConfig(_message.Message):
    __slots__ = ("stickySessions",)
    STICKYSESSIONS_FIELD_NUMBER: _ClassVar[int]
    stickySessions: bool
    def __init__(self, stickySessions: _Optional[bool] = ...) -> None: ...

class ExperimentCandidate(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class ExperimentMirror(_message.Message):
    __slots__ = ("name", "percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    percent: int
    def __init__(self, name: _Optional[str] = ..., percent: _Optional[int] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopExperimentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExperimentSubscriptionRequest(_message.Message):
    __slots__ = ("subscriberName",)
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    def __init__(self, subscriberName: _Optional[str] = ...) -> None: ...

class ExperimentStatusResponse(_message.Message):
    __slots__ = ("experimentName", "active", "candidatesReady", "mirrorReady", "statusDescription", "kubernetesMeta")
    EXPERIMENTNAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATESREADY_FIELD_NUMBER: _ClassVar[int]
    MIRRORREADY_FIELD_NUMBER: _ClassVar[int]
    STATUSDESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    experimentName: str
    active: bool
    candidatesReady: bool
    mirrorReady: bool
    statusDescription: str
    kubernetesMeta: KubernetesMeta
    def __init__(self, experimentName: _Optional[str] = ..., active: _Optional[bool] = ..., candidatesReady: _Optional[bool] = ..., mirrorReady: _Optional[bool] = ..., statusDescription: _Optional[str] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ...) -> None: ...

class LoadPipelineRequest(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class ExperimentStatusRequest(_message.Message):
    __slots__ = ("subscriberName", "name")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    name: str
    def __init__(self, subscriberName: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("name", "uid", "version", "steps", "output", "kubernetesMeta", "input", "dataflowSpec", "allowCycles", "maxStepRevisits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    KUBERNETESMETA_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    DATAFLOWSPEC_FIELD_NUMBER: _ClassVar[int]
    ALLOWCYCLES_FIELD_NUMBER: _ClassVar[int]
    MAXSTEPREVISITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    uid: str
    version: int
    steps: _containers.RepeatedCompositeFieldContainer[PipelineStep]
    output: PipelineOutput
    kubernetesMeta: KubernetesMeta
    input: PipelineInput
    dataflowSpec: DataflowSpec
    allowCycles: bool
    maxStepRevisits: int
    def __init__(self, name: _Optional[str] = ..., uid: _Optional[str] = ..., version: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[PipelineStep, _Mapping]]] = ..., output: _Optional[_Union[PipelineOutput, _Mapping]] = ..., kubernetesMeta: _Optional[_Union[KubernetesMeta, _Mapping]] = ..., input: _Optional[_Union[PipelineInput, _Mapping]] = ..., dataflowSpec: _Optional[_Union[DataflowSpec, _Mapping]] = ..., allowCycles: _Optional[bool] = ..., maxStepRevisits: _Optional[int] = ...) -> None: ...

class DataflowSpec(_message.Message):
    __slots__ = ("cleanTopicsOnDelete",)
    CLEANTOPICSONDELETE_FIELD_NUMBER: _ClassVar[int]
    cleanTopicsOnDelete: bool
    def __init__(self, cleanTopicsOnDelete: _Optional[bool] = ...) -> None: ...

class PipelineStep(_message.Message):
    __slots__ = ("name", "inputs", "joinWindowMs", "tensorMap", "inputsJoin", "triggers", "triggersJoin", "batch", "passEmptyResponses")
    class JoinOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INNER: _ClassVar[PipelineStep.JoinOp]
        OUTER: _ClassVar[PipelineStep.JoinOp]
        ANY: _ClassVar[PipelineStep.JoinOp]
    INNER: PipelineStep.JoinOp
    OUTER: PipelineStep.JoinOp
    ANY: PipelineStep.JoinOp
    class TensorMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    JOINWINDOWMS_FIELD_NUMBER: _ClassVar[int]
    TENSORMAP_FIELD_NUMBER: _ClassVar[int]
    INPUTSJOIN_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    TRIGGERSJOIN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PASSEMPTYRESPONSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    joinWindowMs: int
    tensorMap: _containers.ScalarMap[str, str]
    inputsJoin: PipelineStep.JoinOp
    triggers: _containers.RepeatedScalarFieldContainer[str]
    triggersJoin: PipelineStep.JoinOp
    batch: Batch
    passEmptyResponses: bool
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., joinWindowMs: _Optional[int] = ..., tensorMap: _Optional[_Mapping[str, str]] = ..., inputsJoin: _Optional[_Union[PipelineStep.JoinOp, str]] = ..., triggers: _Optional[_Iterable[str]] = ..., triggersJoin: _Optional[_Union[PipelineStep.JoinOp, str]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ..., passEmptyResponses: _Optional[bool] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("size", "windowMs", "rolling")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WINDOWMS_FIELD_NUMBER: _ClassVar[int]
    ROLLING_FIELD_NUMBER: _ClassVar[int]
    size: int
    windowMs: int
    rolling: bool
    def __init__(self, size: _Optional[int] = ..., windowMs: _Optional[int] = ..., rolling: _Optional[bool] = ...) -> None: ...

class PipelineInput(_message.Message):
    __slots__ = ("externalInputs", "externalTriggers", "joinWindowMs", "joinType", "triggersJoin", "tensorMap")
    class JoinOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INNER: _ClassVar[PipelineInput.JoinOp]
        OUTER: _ClassVar[PipelineInput.JoinOp]
        ANY: _ClassVar[PipelineInput.JoinOp]
    INNER: PipelineInput.JoinOp
    OUTER: PipelineInput.JoinOp
    ANY: PipelineInput.JoinOp
    class TensorMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXTERNALINPUTS_FIELD_NUMBER: _ClassVar[int]
    EXTERNALTRIGGERS_FIELD_NUMBER: _ClassVar[int]
    JOINWINDOWMS_FIELD_NUMBER: _ClassVar[int]
    JOINTYPE_FIELD_NUMBER: _ClassVar[int]
    TRIGGERSJOIN_FIELD_NUMBER: _ClassVar[int]
    TENSORMAP_FIELD_NUMBER: _ClassVar[int]
    externalInputs: _containers.RepeatedScalarFieldContainer[str]
    externalTriggers: _containers.RepeatedScalarFieldContainer[str]
    joinWindowMs: int
    joinType: PipelineInput.JoinOp
    triggersJoin: PipelineInput.JoinOp
    tensorMap: _containers.ScalarMap[str, str]
    def __init__(self, externalInputs: _Optional[_Iterable[str]] = ..., externalTriggers: _Optional[_Iterable[str]] = ..., joinWindowMs: _Optional[int] = ..., joinType: _Optional[_Union[PipelineInput.JoinOp, str]] = ..., triggersJoin: _Optional[_Union[PipelineInput.JoinOp, str]] = ..., tensorMap: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PipelineOutput(_message.Message):
    __slots__ = ("steps", "joinWindowMs", "stepsJoin", "tensorMap")
    class JoinOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INNER: _ClassVar[PipelineOutput.JoinOp]
        OUTER: _ClassVar[PipelineOutput.JoinOp]
        ANY: _ClassVar[PipelineOutput.JoinOp]
    INNER: PipelineOutput.JoinOp
    OUTER: PipelineOutput.JoinOp
    ANY: PipelineOutput.JoinOp
    class TensorMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STEPS_FIELD_NUMBER: _ClassVar[int]
    JOINWINDOWMS_FIELD_NUMBER: _ClassVar[int]
    STEPSJOIN_FIELD_NUMBER: _ClassVar[int]
    TENSORMAP_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[str]
    joinWindowMs: int
    stepsJoin: PipelineOutput.JoinOp
    tensorMap: _containers.ScalarMap[str, str]
    def __init__(self, steps: _Optional[_Iterable[str]] = ..., joinWindowMs: _Optional[int] = ..., stepsJoin: _Optional[_Union[PipelineOutput.JoinOp, str]] = ..., tensorMap: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LoadPipelineResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnloadPipelineRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadPipelineResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PipelineStatusRequest(_message.Message):
    __slots__ = ("subscriberName", "name", "allVersions")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLVERSIONS_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    name: str
    allVersions: bool
    def __init__(self, subscriberName: _Optional[str] = ..., name: _Optional[str] = ..., allVersions: _Optional[bool] = ...) -> None: ...

class PipelineSubscriptionRequest(_message.Message):
    __slots__ = ("subscriberName", "subscriberIp", "isPipelineGateway")
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERIP_FIELD_NUMBER: _ClassVar[int]
    ISPIPELINEGATEWAY_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    subscriberIp: str
    isPipelineGateway: bool
    def __init__(self, subscriberName: _Optional[str] = ..., subscriberIp: _Optional[str] = ..., isPipelineGateway: _Optional[bool] = ...) -> None: ...

class PipelineStatusResponse(_message.Message):
    __slots__ = ("pipelineName", "versions", "timestamp", "operation")
    class PipelineOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PipelineOperationUnknown: _ClassVar[PipelineStatusResponse.PipelineOperation]
        PipelineCreate: _ClassVar[PipelineStatusResponse.PipelineOperation]
        PipelineDelete: _ClassVar[PipelineStatusResponse.PipelineOperation]
    PipelineOperationUnknown: PipelineStatusResponse.PipelineOperation
    PipelineCreate: PipelineStatusResponse.PipelineOperation
    PipelineDelete: PipelineStatusResponse.PipelineOperation
    PIPELINENAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    pipelineName: str
    versions: _containers.RepeatedCompositeFieldContainer[PipelineWithState]
    timestamp: int
    operation: PipelineStatusResponse.PipelineOperation
    def __init__(self, pipelineName: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[PipelineWithState, _Mapping]]] = ..., timestamp: _Optional[int] = ..., operation: _Optional[_Union[PipelineStatusResponse.PipelineOperation, str]] = ...) -> None: ...

class PipelineWithState(_message.Message):
    __slots__ = ("pipeline", "state")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    state: PipelineVersionState
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., state: _Optional[_Union[PipelineVersionState, _Mapping]] = ...) -> None: ...

class PipelineVersionState(_message.Message):
    __slots__ = ("pipelineVersion", "status", "reason", "lastChangeTimestamp", "modelsReady", "pipelineGwStatus", "pipelineGwReason")
    class PipelineStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PipelineStatusUnknown: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineCreate: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineCreating: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineReady: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineFailed: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineTerminate: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineTerminating: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineTerminated: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineRebalancing: _ClassVar[PipelineVersionState.PipelineStatus]
        PipelineFailedTerminating: _ClassVar[PipelineVersionState.PipelineStatus]
    PipelineStatusUnknown: PipelineVersionState.PipelineStatus
    PipelineCreate: PipelineVersionState.PipelineStatus
    PipelineCreating: PipelineVersionState.PipelineStatus
    PipelineReady: PipelineVersionState.PipelineStatus
    PipelineFailed: PipelineVersionState.PipelineStatus
    PipelineTerminate: PipelineVersionState.PipelineStatus
    PipelineTerminating: PipelineVersionState.PipelineStatus
    PipelineTerminated: PipelineVersionState.PipelineStatus
    PipelineRebalancing: PipelineVersionState.PipelineStatus
    PipelineFailedTerminating: PipelineVersionState.PipelineStatus
    PIPELINEVERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LASTCHANGETIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODELSREADY_FIELD_NUMBER: _ClassVar[int]
    PIPELINEGWSTATUS_FIELD_NUMBER: _ClassVar[int]
    PIPELINEGWREASON_FIELD_NUMBER: _ClassVar[int]
    pipelineVersion: int
    status: PipelineVersionState.PipelineStatus
    reason: str
    lastChangeTimestamp: _timestamp_pb2.Timestamp
    modelsReady: bool
    pipelineGwStatus: PipelineVersionState.PipelineStatus
    pipelineGwReason: str
    def __init__(self, pipelineVersion: _Optional[int] = ..., status: _Optional[_Union[PipelineVersionState.PipelineStatus, str]] = ..., reason: _Optional[str] = ..., lastChangeTimestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., modelsReady: _Optional[bool] = ..., pipelineGwStatus: _Optional[_Union[PipelineVersionState.PipelineStatus, str]] = ..., pipelineGwReason: _Optional[str] = ...) -> None: ...

class SchedulerStatusRequest(_message.Message):
    __slots__ = ("subscriberName",)
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    def __init__(self, subscriberName: _Optional[str] = ...) -> None: ...

class SchedulerStatusResponse(_message.Message):
    __slots__ = ("applicationVersion",)
    APPLICATIONVERSION_FIELD_NUMBER: _ClassVar[int]
    applicationVersion: str
    def __init__(self, applicationVersion: _Optional[str] = ...) -> None: ...

class ControlPlaneSubscriptionRequest(_message.Message):
    __slots__ = ("subscriberName",)
    SUBSCRIBERNAME_FIELD_NUMBER: _ClassVar[int]
    subscriberName: str
    def __init__(self, subscriberName: _Optional[str] = ...) -> None: ...

class ControlPlaneResponse(_message.Message):
    __slots__ = ("event",)
    class Event(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN_EVENT: _ClassVar[ControlPlaneResponse.Event]
        SEND_SERVERS: _ClassVar[ControlPlaneResponse.Event]
        SEND_MODELS: _ClassVar[ControlPlaneResponse.Event]
        SEND_PIPELINES: _ClassVar[ControlPlaneResponse.Event]
        SEND_EXPERIMENTS: _ClassVar[ControlPlaneResponse.Event]
    UNKNOWN_EVENT: ControlPlaneResponse.Event
    SEND_SERVERS: ControlPlaneResponse.Event
    SEND_MODELS: ControlPlaneResponse.Event
    SEND_PIPELINES: ControlPlaneResponse.Event
    SEND_EXPERIMENTS: ControlPlaneResponse.Event
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: ControlPlaneResponse.Event
    def __init__(self, event: _Optional[_Union[ControlPlaneResponse.Event, str]] = ...) -> None: ...

class ModelUpdateMessage(_message.Message):
    __slots__ = ("op", "model", "version", "uid", "timestamp", "stream")
    class ModelOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Unknown: _ClassVar[ModelUpdateMessage.ModelOperation]
        Create: _ClassVar[ModelUpdateMessage.ModelOperation]
        Delete: _ClassVar[ModelUpdateMessage.ModelOperation]
    Unknown: ModelUpdateMessage.ModelOperation
    Create: ModelUpdateMessage.ModelOperation
    Delete: ModelUpdateMessage.ModelOperation
    OP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    op: ModelUpdateMessage.ModelOperation
    model: str
    version: int
    uid: str
    timestamp: int
    stream: str
    def __init__(self, op: _Optional[_Union[ModelUpdateMessage.ModelOperation, str]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., uid: _Optional[str] = ..., timestamp: _Optional[int] = ..., stream: _Optional[str] = ...) -> None: ...

class ModelUpdateStatusMessage(_message.Message):
    __slots__ = ("update", "success", "reason")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    update: ModelUpdateMessage
    success: bool
    reason: str
    def __init__(self, update: _Optional[_Union[ModelUpdateMessage, _Mapping]] = ..., success: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelUpdateStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
