"""PyTorch re-implementation of the supervised CACE-Net model (Co-Guide, BiLSTM, contrastive).

Benchmark/verification TOOL for cace-net (never a runtime dependency). Written from
/work/shared/design/REFERENCE.md §2-§4 (no official code copied). Module and parameter names equal
the official state-dict keys (without the `module.` prefix of nn.DataParallel), so
`model.load_state_dict(sd, strict=True)` accepts an official checkpoint (242 tensors), including
the 70 tensors that forward never reads.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

# configs/main.json + published command line
D_MODEL = 256
ALPHA = 0.1      # gate self-modulation
GAMMA = 0.3      # weight of the CAS top-4 score in event_scores
BETA = 0.4       # self-calibration weight (visual)
PSAI = 0.3       # visual-guided calibration weight (audio)
LAMBDA = 0.6     # projector mix into the is-event head
TAU = 0.01       # contrastive temperature
NOISE_STD = 0.1  # BECE augmentation noise
N_CLASSES = 28


# --------------------------------------------------------------------------------------------
# Co-guided attention (REFERENCE §2.3 step 3)
# --------------------------------------------------------------------------------------------
class Co_Guided_Attention(nn.Module):
    def __init__(self, psai=PSAI, beta=BETA, video_dim=512, audio_dim=128):
        super().__init__()
        self.psai = psai
        self.beta = beta
        hid = 256
        qk = video_dim // 4  # 128
        # definition order = official state-dict order (REFERENCE §3.2 rows 1-52)
        self.affine_video_1 = nn.Linear(video_dim, video_dim)
        self.affine_audio_1 = nn.Linear(audio_dim, video_dim)
        self.affine_bottleneck = nn.Linear(video_dim, hid)
        self.affine_v_c_att = nn.Linear(hid, video_dim)
        self.affine_video_2 = nn.Linear(video_dim, hid)
        self.affine_audio_2 = nn.Linear(audio_dim, hid)
        self.affine_v_s_att = nn.Linear(hid, 1)
        self.video_query = nn.Linear(video_dim, qk)
        self.video_key = nn.Linear(video_dim, qk)
        self.video_value = nn.Linear(video_dim, video_dim)
        self.v_norm = nn.LayerNorm(video_dim)
        self.video_query2 = nn.Linear(video_dim, qk)
        self.video_key2 = nn.Linear(video_dim, qk)
        self.video_value2 = nn.Linear(video_dim, video_dim)
        self.v_norm2 = nn.LayerNorm(video_dim)          # UNUSED (G2 uses v_norm)
        self.affine_video_ave = nn.Linear(video_dim, hid)
        self.affine_video_3 = nn.Linear(video_dim, hid)
        self.ave_bottleneck = nn.Linear(video_dim, hid)  # UNUSED
        self.ave_v_att = nn.Linear(hid, 1)
        self.v_query = nn.Linear(video_dim, audio_dim)
        self.vaudio_key = nn.Linear(audio_dim, audio_dim)
        self.vaudio_value = nn.Linear(audio_dim, audio_dim)
        self.audio_query = nn.Linear(audio_dim, audio_dim)
        self.audio_key = nn.Linear(audio_dim, audio_dim)
        self.audio_value = nn.Linear(audio_dim, audio_dim)
        self.a_norm = nn.LayerNorm(audio_dim)
        self.relu = nn.ReLU()
        self.tanh = nn.Tanh()
        self.sigmoid = nn.Sigmoid()
        self.softmax = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.2)

    def forward(self, video, audio):
        # video [B,T,7,7,512]; audio [T,B,128]
        audio = audio.transpose(1, 0)                      # A [B,T,128]
        b, t, h, w, c = video.shape
        x4 = video.reshape(b, t, h * w, c)                 # [B,T,49,512]
        X = x4.reshape(b * t, h * w, c)                    # raw visual [BT,49,512]
        A_f = audio.reshape(b * t, -1)                     # [BT,128]

        # 3.1 / 3.2 spatial self-attention, two branches, both normalised with v_norm
        S1 = self.softmax(self.video_query(x4) @ self.video_key(x4).transpose(-1, -2))
        G1 = self.v_norm(X + self.dropout((S1 @ self.video_value(x4)).reshape(b * t, h * w, c)))
        S2 = self.softmax(self.video_query2(x4) @ self.video_key2(x4).transpose(-1, -2))
        G2 = self.v_norm(X + self.dropout((S2 @ self.video_value2(x4)).reshape(b * t, h * w, c)))

        # 3.3 self-calibration vector
        m = self.relu(self.affine_video_ave(G1.mean(dim=1))).unsqueeze(1)         # [BT,1,256]
        qs = self.relu(self.affine_video_3(G1)) * m                                 # [BT,49,256]
        w_self = self.softmax(self.tanh(self.ave_v_att(qs)).transpose(1, 2))       # [BT,1,49]
        c_self = (w_self @ G1).squeeze(1)                                           # [BT,512]

        # 3.4 audio-guided channel attention
        qa = self.relu(self.affine_audio_1(A_f)).unsqueeze(1)                      # [BT,1,512]
        qv = self.relu(self.affine_video_1(G1))                                     # [BT,49,512]
        z = (qa * qv).mean(dim=1)                                                   # [BT,512]
        ch = self.sigmoid(self.affine_v_c_att(self.relu(self.affine_bottleneck(z))))
        Xc = X * (ch.unsqueeze(1) + 1)                                              # [BT,49,512]

        # 3.5 audio-guided spatial attention
        u = self.relu(self.affine_video_2(Xc)) * self.relu(self.affine_audio_2(A_f)).unsqueeze(1)
        w_sp = self.softmax(self.tanh(self.affine_v_s_att(u)).transpose(1, 2))     # [BT,1,49]
        vcs = (w_sp @ Xc).squeeze(1)                                                # [BT,512]

        # 3.6
        v_out = (vcs + self.beta * self.sigmoid(c_self) * vcs).reshape(b, t, c)

        # 3.7 audio temporal self-attention
        Sa = self.softmax(self.audio_query(audio) @ self.audio_key(audio).transpose(-1, -2))
        Ag = self.a_norm(audio + self.dropout(Sa @ self.audio_value(audio)))        # [B,T,128]

        # 3.8 visual-guided audio attention
        qv2 = self.v_query(G2.mean(dim=1)).reshape(b, t, -1)                        # [B,T,128]
        Sva = self.softmax(qv2 @ self.vaudio_key(Ag).transpose(-1, -2))
        a_t = Sva @ self.vaudio_value(Ag)

        # 3.9
        a_out = audio + self.psai * self.sigmoid(a_t) * audio
        return v_out, a_out


# --------------------------------------------------------------------------------------------
# Transformer blocks (REFERENCE §2.2)
# --------------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src):
        src2 = self.self_attn(src, src, src)[0]
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class DecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)  # never called
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, tgt, memory):
        memory = torch.cat([memory, tgt], dim=0)          # [2T,B,256]
        tgt2 = self.multihead_attn(tgt, memory, memory)[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm2(tgt + self.dropout2(tgt2))


class Encoder(nn.Module):
    def __init__(self, layer, num_layers):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Decoder(nn.Module):
    def __init__(self, layer, num_layers):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])

    def forward(self, x, memory):
        for layer in self.layers:
            x = layer(x, memory)
        return x


class InternalTemporalRelationModule(nn.Module):
    def __init__(self, input_dim, d_model, feedforward_dim=1024):
        super().__init__()
        self.encoder_layer = EncoderLayer(d_model, 4, feedforward_dim)  # template, UNUSED
        self.encoder = Encoder(self.encoder_layer, num_layers=2)
        self.affine_matrix = nn.Linear(input_dim, d_model)
        self.relu = nn.ReLU()  # unused

    def forward(self, feature):
        return self.encoder(self.affine_matrix(feature))


class CrossModalRelationAttModule(nn.Module):
    def __init__(self, input_dim, d_model, feedforward_dim=512):
        super().__init__()
        self.decoder_layer = DecoderLayer(d_model, 4, feedforward_dim)  # template, UNUSED
        self.decoder = Decoder(self.decoder_layer, num_layers=1)
        self.affine_matrix = nn.Linear(input_dim, d_model)
        self.relu = nn.ReLU()  # unused

    def forward(self, query, memory):
        return self.decoder(self.affine_matrix(query), memory)


class AudioVideoInter(nn.Module):
    def __init__(self, d_model, n_head, head_dropout=0.2):
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.video_multihead = nn.MultiheadAttention(d_model, num_heads=n_head, dropout=head_dropout)
        self.norm1 = nn.LayerNorm(d_model)

    def forward(self, x, y):
        g = x * y
        memory = torch.cat([y, x], dim=0)
        mid = self.video_multihead(g, memory, memory)[0]
        return self.norm1(g + self.dropout(mid))


class RNNEncoder(nn.Module):
    def __init__(self, audio_dim=128, video_dim=512, d_model=256):
        super().__init__()
        # official passes dropout=0.2, which has no effect with num_layers=1 (and only warns)
        self.audio_rnn = nn.LSTM(audio_dim, d_model // 2, num_layers=1, batch_first=True,
                                 bidirectional=True)
        self.visual_rnn = nn.LSTM(video_dim, d_model, num_layers=1, batch_first=True,
                                  bidirectional=True)

    def forward(self, audio, visual):
        return self.audio_rnn(audio)[0], self.visual_rnn(visual)[0]


# --------------------------------------------------------------------------------------------
# Localisation head with BECE (REFERENCE §2.3 step 15)
# --------------------------------------------------------------------------------------------
class SupvLocalizeModule(nn.Module):
    def __init__(self, d_model=D_MODEL, Lambda=LAMBDA):
        super().__init__()
        self.Lambda = Lambda
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(d_model, 1)
        self.encoder_q = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU())
        self.event_classifier = nn.Linear(d_model, N_CLASSES)

    def forward(self, fused, switch, noise=None):
        # fused F_av [T,B,256]
        P = self.encoder_q(fused)
        Fo = fused + self.Lambda * P if switch else fused
        is_event = self.classifier(Fo)                                  # [T,B,1]
        q = F.normalize(P, dim=-1).transpose(0, 1)                      # [B,T,256]
        if noise is None:
            noise = torch.randn_like(fused)
        aug = fused + noise * NOISE_STD
        k = F.normalize(self.encoder_q(aug), dim=-1).transpose(0, 1)   # [B,T,256]
        cls = self.event_classifier(fused.max(dim=0)[0])                # [B,28]
        return is_event, cls, q, k


def top4_mean(cas):
    # cas [T,B,28] -> [B,T,28] -> mean of the 4 largest over T -> [B,28]
    cas = cas.permute(1, 0, 2)
    s, _ = cas.sort(dim=1, descending=True)
    return s[:, :4, :].mean(dim=1)


class supv_main_model(nn.Module):
    def __init__(self, psai=PSAI, Lambda=LAMBDA):
        super().__init__()
        self.video_input_dim = 512
        self.audio_input_dim = 128
        self.video_fc_dim = 512
        self.d_model = D_MODEL
        self.alpha = ALPHA
        self.gamma = GAMMA
        self.contrastive_switch = False

        self.spatial_channel_att = Co_Guided_Attention(psai, BETA, 512, 128)
        self.v_fc = nn.Linear(512, self.video_fc_dim)
        self.a_fc = nn.Linear(128, 128)  # UNUSED (call commented out in the official code)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.2)
        self.video_encoder = InternalTemporalRelationModule(512, D_MODEL, 1024)
        self.video_decoder = CrossModalRelationAttModule(512, D_MODEL, 512)
        self.audio_encoder = InternalTemporalRelationModule(D_MODEL, D_MODEL, 1024)
        self.audio_decoder = CrossModalRelationAttModule(D_MODEL, D_MODEL, 512)
        self.audio_visual_rnn_layer = RNNEncoder(128, 512, D_MODEL)
        self.audio_gated = nn.Sequential(nn.Linear(D_MODEL, 1), nn.Sigmoid())
        self.video_gated = nn.Sequential(nn.Linear(D_MODEL, 1), nn.Sigmoid())
        self.AVInter = AudioVideoInter(D_MODEL, n_head=4, head_dropout=0.2)
        self.VAInter = AudioVideoInter(D_MODEL, n_head=4, head_dropout=0.2)
        self.localize_module = SupvLocalizeModule(D_MODEL, Lambda)
        self.audio_cas = nn.Linear(D_MODEL, N_CLASSES)
        self.video_cas = nn.Linear(D_MODEL, N_CLASSES)

    def forward(self, visual, audio, noise=None):
        """visual [B,T,7,7,512], audio [B,T,128]; noise: optional [T,B,256] BECE noise.

        Returns (is_event_scores [T,B,1], event_scores [B,28], audio_visual_gate [T,B,1],
        av_score [B,28], q [B,T,256], k [B,T,256])."""
        audio = audio.transpose(1, 0).contiguous()                       # [T,B,128]
        v0 = self.dropout(self.relu(self.v_fc(visual)))                  # [B,T,7,7,512]
        v1, a1 = self.spatial_channel_att(v0, audio)                     # [B,T,512],[B,T,128]
        ar, vr = self.audio_visual_rnn_layer(a1, v1)                     # [B,T,256],[B,T,512]
        ar = ar.transpose(1, 0).contiguous()                             # [T,B,256]
        vr = vr.transpose(1, 0).contiguous()                             # [T,B,512]

        vkv = self.video_encoder(vr)
        aq = self.audio_decoder(ar, vkv)
        akv = self.audio_encoder(ar)
        vq = self.video_decoder(vr, akv)

        g_a = self.audio_gated(akv)
        g_v = self.video_gated(vkv)
        gate = g_a * g_v
        vq = vq + g_a * vq * self.alpha
        aq = aq + g_v * aq * self.alpha

        av_score = (top4_mean(self.video_cas(vq)) + top4_mean(self.audio_cas(aq))) / 2

        vq = self.AVInter(vq, aq)
        aq = self.VAInter(aq, vq)
        fused = (vq + aq) / 2
        is_event, cls, q, k = self.localize_module(fused, self.contrastive_switch, noise)
        event_scores = cls + self.gamma * av_score
        return is_event, event_scores, gate, av_score, q, k


# --------------------------------------------------------------------------------------------
# Loss (REFERENCE §4.2-§4.4) and training step
# --------------------------------------------------------------------------------------------
def decode_labels(labels):
    fg = labels[:, :, :N_CLASSES]
    y_bce, idx = fg.max(-1)          # [B,T] event mask, per-segment class index
    y_cls, _ = idx.max(-1)           # [B] video class
    return y_bce, y_cls


def contrastive_loss(q, k, y_bce, tau=TAU):
    """Supervised contrastive loss (§4.4) in log-sum-exp form. q,k [B,T,C], y_bce [B,T]."""
    B, T, _ = q.shape
    f = torch.cat([q, k], dim=1)                                   # [B,2T,C]
    S = f @ f.transpose(1, 2) / tau                                # [B,2T,2T]
    y = torch.cat([y_bce, y_bce], dim=1) > 0.5                     # [B,2T]
    tix = torch.arange(2 * T, device=q.device) % T
    same_t = (tix[:, None] == tix[None, :]).unsqueeze(0)           # [1,2T,2T]
    eye = torch.eye(2 * T, dtype=torch.bool, device=q.device).unsqueeze(0)
    pos = ((y[:, :, None] & y[:, None, :]) | same_t) & ~eye        # [B,2T,2T]
    neg_inf = torch.finfo(S.dtype).min
    lse_pos = torch.logsumexp(S.masked_fill(~pos, neg_inf), dim=-1)
    lse_all = torch.logsumexp(S.masked_fill(eye, neg_inf), dim=-1)
    npos = pos.sum(-1).to(S.dtype)
    return (-(lse_pos - lse_all - torch.log(npos))).mean()


def compute_losses(outputs, labels, contrastive=True, contras_coeff=1.0):
    is_event, event_scores, gate, av_score, q, k = outputs
    y_bce, y_cls = decode_labels(labels)
    s = is_event.transpose(1, 0).squeeze(-1)                       # [B,T]
    g = gate.transpose(1, 0).squeeze(-1)
    l_event = F.binary_cross_entropy_with_logits(s, y_bce)
    l_class = F.cross_entropy(event_scores, y_cls)
    l_gate = F.binary_cross_entropy_with_logits(g, y_bce)        # sigmoid applied a 3rd time, as official
    l_cas = F.cross_entropy(av_score, y_cls)
    total = l_event + l_class + l_gate + l_cas
    out = {"loss_is_event": l_event, "loss_event_class": l_class, "loss_gate": l_gate,
           "loss_cas": l_cas}
    if contrastive:
        l_con = contrastive_loss(q, k, y_bce)
        total = total + contras_coeff * l_con
        out["loss_contrastive"] = l_con
    out["total"] = total
    return out


def make_optimizer(model, lr=7e-4):
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)


def train_step(model, opt, visual, audio, labels, noise=None, clip=0.5):
    """forward -> loss -> backward -> clip_grad_norm_(0.5) -> Adam.step -> zero_grad.
    Returns (losses dict, grad norm before clipping)."""
    outputs = model(visual, audio, noise)
    losses = compute_losses(outputs, labels, contrastive=True)
    losses["total"].backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return losses, gnorm


def predict(is_event, event_scores):
    """Per-segment prediction [B,T]: argmax class where logit > 0 else 28 (background)."""
    cls = event_scores.argmax(-1)                                  # [B]
    ev = is_event.transpose(1, 0).squeeze(-1) > 0                  # sigmoid > 0.5
    return torch.where(ev, cls[:, None].expand_as(ev), torch.full_like(cls[:, None], 28).expand_as(ev))


def set_dropout(model, p):
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = p
        elif isinstance(mod, nn.MultiheadAttention):
            mod.dropout = p


def load_official(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    return list(sd.keys())
